"""Logged-in sessions as signed cookies, and the CSRF token of each session's forms.

A cookie is ``base64url(JSON {u, r, exp}) . base64url(HMAC-SHA256(key, that))``: nothing
to store server-side, and nothing a browser can alter (the MAC is checked in constant
time). The key is a 32-byte file (0600) made on first start; replacing it logs everyone
out. Cookies are HttpOnly and SameSite=Strict; a form also carries a token bound to the
session (HMAC of the cookie), checked on every POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ecoin.common import files

COOKIE = "ecoin_session"


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(path: str | Path) -> bytes:
    """The signing key, created (0600, never overwritten) if it does not exist yet."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            files.create_new(p, os.urandom(32))
        except FileExistsError:
            pass  # made meanwhile by another instance
    key = p.read_bytes()
    if len(key) != 32:
        raise ValueError(f"{path}: a session key is 32 bytes")
    return key


class Signer:
    def __init__(self, key: bytes, hours: float) -> None:
        self.key = key
        self.lifetime = int(hours * 3600)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str, role: str) -> str:
        body = {"u": user, "r": role, "exp": int(time.time()) + self.lifetime}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None (absent, altered or expired)."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(str(body["u"]), str(body["r"]), int(body["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(str(token), self.csrf(str(cookie)))

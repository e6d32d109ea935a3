"""A small synchronous client of the bank API (docs/BANK_API.md), for analysts, gateways,
owners, provisioning tools and admins. Its API is stable: other parts code against it.

    from ecoin.common.bank_client import BankClient, RedeemItem

    bank = BankClient("https://127.0.0.1:8443", cert, key, ca)   # paths of our PEM files
    bank.redeem([RedeemItem(kid, header, op_id, "average", digest, tag)])   # -> [RedeemResult]
    bank.topup(frame)                                          # -> TOPUP_RESPONSE bytes
    bank.create_account("olive", "owner")                      # admin
    bank.create_account("alice", "analyst", ["average"])       # admin
    bank.fund("olive", 100)                                    # admin -> new balance
    bank.accounts()                                            # admin, auditor -> [dict]
    bank.balance()                                             # owner, analyst -> int
    bank.register_device("dev1", device_key)                   # owner
    bank.withdraw("dev1", 10, request_id="r-1")                # owner -> Withdrawal
    bank.claim("dev1", coins)                                  # owner -> [dict]
    bank.set_policy({"services": ["average"]}, "dev1")         # owner; None removes; no id: default
    bank.policies()                                            # owner -> {"default", "devices"}
    bank.statement("2026-12-01", "2026-12-31", fmt="csv")      # owner, analyst -> dict or CSV text
    bank.healthz()                                             # any role -> True
    bank.close()                                               # or: with BankClient(...) as bank

Binary values are bytes on this side (the client does the base64 and hex). One connection
is kept open (keep-alive) and reopened after a failure. Every call may be retried once on
a broken connection, because every call is idempotent on the bank's side (``fund`` and
``withdraw`` carry a request id, redemption is idempotent per analyst and operation digest,
a top-up frame is answered again with the same coins); a repeated ``create_account`` or
``register_device`` reports ``Exists``.

Errors: every refusal raises the ``ecoin.common.bank_errors`` class of its code (``Forbidden``,
``InsufficientFunds``, ``Malformed``, ...); a bank that cannot be reached, or answers 503,
raises ``Unavailable``; a handshake the bank refused raises ``Unauthenticated``.
Redemption refusals are not exceptions: they are results with ``ok == False``.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ecoin.common import tls

from .bank_errors import BankError, Malformed, Unauthenticated, Unavailable, from_answer

__all__ = ["BankClient", "RedeemItem", "RedeemResult", "Withdrawal", "BankError", "Unavailable"]


@dataclass(frozen=True)
class RedeemItem:
    """What the bank needs to verify an OPERATION before it pays for it (PROTOCOL.md 7.3)."""

    kid: bytes  # 8 bytes, from the OPERATION frame
    header: bytes  # the RSA-OAEP header
    op_id: bytes  # 16 bytes
    service: str
    digest: bytes  # 32 bytes: session.operation_digest(frame), SHA-256 of the frame before its tag
    tag: bytes  # 32 bytes: the frame's tag
    not_after: float | None = None  # unix seconds: past it the bank refuses, spending nothing
    price: int = 1  # the analyst's price for the service: the bank refuses a header with fewer coins
    repeat: bool = False  # only ask for the keys of a payment already made: the bank spends nothing


@dataclass(frozen=True)
class RedeemResult:
    ok: bool
    k_enc: bytes = b""
    k_mac: bytes = b""
    iv: bytes = b""
    coins: int = 0  # when ok: the coins the header paid (what the analyst is credited)
    code: str = ""  # when refused: one of ecoin.common.bank_errors.REFUSALS
    message: str = ""


@dataclass(frozen=True)
class Withdrawal:
    coins: list[bytes]
    expires: int
    kid: bytes
    public_key: tuple[int, int]  # (n, e) of the coin key to encrypt headers with


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class BadUrl(ValueError):
    """A bank URL that is not https://host[:port]."""


def split_url(url: str) -> tuple[str, int]:
    """(host, port) of the bank's ``https://host[:port]`` (443 by default)."""
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        port = parts.port or 443  # urllib checks the port only when asked for it
    except ValueError:  # a port out of range or not a number, an unclosed [IPv6 literal
        parts, port = None, 0
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise BadUrl(f"bank url must be https://host:port, not {url!r}")
    return parts.hostname, port


# How long past the last not_after of a redemption its answer is still waited for.
ANSWER_GRACE_S = 2.0


def _answer_wait(items: list[RedeemItem], timeout: float) -> float:
    """A redemption is waited for until every item's not_after has passed: a bank that stalls
    (a stopped process, a slow disk) and resumes before then may still spend it, and its
    answer, the keys, must find us listening. Given up sooner, the coin would be paid for an
    operation whose device is answered FAILED. Past not_after the bank spends nothing."""
    deadlines = [i.not_after for i in items if i.not_after is not None]
    if not items or len(deadlines) < len(items):
        return timeout
    return max(timeout, max(deadlines) - time.time() + ANSWER_GRACE_S)


class BankClient:
    def __init__(
        self,
        url: str,
        cert: str | Path,
        key: str | Path,
        ca: str | Path,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port = split_url(url)
        self.timeout = timeout
        self.context = tls.client_context(cert, key, ca)
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the one connection

    def __enter__(self) -> BankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Transport.

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, wait: float | None = None
    ) -> dict[str, Any]:
        """One API call; returns the decoded JSON answer or raises the error's class. ``wait``:
        how long the answer may take (default ``timeout``)."""
        data = json.dumps(body).encode() if body is not None else None
        status, raw = self._send(method, path, data, wait)
        return self._decode(status, raw)

    def text(self, method: str, path: str) -> str:
        """A call whose answer is text (a CSV statement); errors are raised as by ``call``."""
        status, raw = self._send(method, path, None)
        if status != 200:
            self._decode(status, raw)
        return raw.decode()

    def _send(
        self, method: str, path: str, data: bytes | None, wait: float | None = None
    ) -> tuple[int, bytes]:
        wait = self.timeout if wait is None else wait
        with self._lock:
            for attempt in (1, 2):
                try:
                    status, raw = self._exchange(method, path, data, wait)
                    break
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    refused = _refused_handshake(exc)
                    if refused:
                        raise Unauthenticated(f"{refused}: {exc}") from exc
                    if attempt == 2:
                        raise Unavailable(f"cannot reach the bank at {self.host}:{self.port}: {exc}") from exc
        return status, raw

    @staticmethod
    def _decode(status: int, raw: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as exc:
            if status >= 500:  # a proxy's error page, say: the bank itself is not answering
                raise Unavailable(f"the bank answered {status} with a body that is not JSON") from exc
            raise Malformed(f"the bank answered {status} with a body that is not JSON") from exc
        if status != 200:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise from_answer(status, str(error.get("code", "internal")), str(error.get("message", "")))
        return answer

    def _exchange(self, method: str, path: str, data: bytes | None, wait: float) -> tuple[int, bytes]:
        if self._conn is None:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
            conn.connect()
            try:
                tls.expect_role(conn.sock, "bank")
            except tls.PeerIdentityError as exc:
                conn.close()
                raise Unauthenticated(f"refusing to talk to {self.host}:{self.port}: {exc}") from None
            self._conn = conn
        if self._conn.sock is not None:
            self._conn.sock.settimeout(wait)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self._conn.request(method, path, body=data, headers=headers)
        response = self._conn.getresponse()
        raw = response.read()
        if response.will_close:
            self._drop()
        return response.status, raw

    # Analyst.

    def redeem(self, items: list[RedeemItem]) -> list[RedeemResult]:
        """Up to 256 headers in one call; one result per item, in order."""
        body = {
            "items": [
                {
                    "kid": i.kid.hex(),
                    "header": _b64(i.header),
                    "op_id": i.op_id.hex(),
                    "service": i.service,
                    "digest": i.digest.hex(),
                    "tag": i.tag.hex(),
                    **({} if i.not_after is None else {"not_after": round(i.not_after, 3)}),
                    "price": i.price,
                    **({"repeat": True} if i.repeat else {}),
                }
                for i in items
            ]
        }
        out = []
        for r in self.call("POST", "/v1/redeem", body, _answer_wait(items, self.timeout))["results"]:
            if r["status"] == "ok":
                keys = _unb64(r["k_enc"]), _unb64(r["k_mac"]), _unb64(r["iv"])
                out.append(RedeemResult(True, *keys, coins=int(r.get("coins", 1))))
            else:
                out.append(RedeemResult(False, code=r["code"], message=r.get("message", "")))
        return out

    # Gateway.

    def topup(self, frame: bytes) -> bytes:
        """Relays a device's TOPUP_REQUEST; returns the sealed TOPUP_RESPONSE."""
        return _unb64(self.call("POST", "/v1/topup", {"frame": _b64(bytes(frame))})["frame"])

    # Admin and auditor.

    def create_account(self, account_id: str, kind: str, services: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": account_id, "kind": kind}
        if services:
            body["services"] = list(services)
        return self.call("POST", "/v1/accounts", body)

    def fund(self, account_id: str, amount: int, request_id: str | None = None) -> int:
        """Credits an owner; returns its new balance. A retry reuses the request id."""
        body = {"amount": amount, "request_id": request_id or uuid.uuid4().hex}
        return int(self.call("POST", f"/v1/accounts/{quote(account_id, safe='')}/fund", body)["balance"])

    def accounts(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/accounts")["accounts"])

    # Owner and analyst.

    def balance(self) -> int:
        return int(self.call("GET", "/v1/balance")["balance"])

    def services(self) -> list[str]:
        """The services analysts offer at this bank: what a device can buy."""
        return [str(s) for s in self.call("GET", "/v1/services")["services"]]

    def register_device(self, device_id: str, device_key: bytes) -> dict[str, Any]:
        return self.call("POST", "/v1/devices", {"device_id": device_id, "device_key": _b64(device_key)})

    def withdraw(self, device_id: str, count: int, request_id: str | None = None) -> Withdrawal:
        """``count`` coins (1 to 10,000) for the device. Repeating a request id returns the
        same coins, so pass your own id if you may retry after a crash."""
        body = {"count": count, "request_id": request_id or uuid.uuid4().hex}
        a = self.call("POST", f"/v1/devices/{quote(device_id, safe='')}/withdraw", body)
        key = a["public_key"]
        return Withdrawal(
            [_unb64(c) for c in a["coins"]],
            int(a["expires"]),
            bytes.fromhex(a["kid"]),
            (int(key["n"], 16), int(key["e"])),
        )

    def claim(self, device_id: str, coins: list[bytes], refund: bool = True) -> list[dict[str, Any]]:
        """Refunds the device's unspent coins among ``coins`` (with refund=False only
        reports); one dict per coin: coin_hash, state (refunded, redeemed + by + at,
        already_refunded, outstanding, expired, unknown)."""
        body = {"device_id": device_id, "coins": [_b64(c) for c in coins], "refund": refund}
        return list(self.call("POST", "/v1/claims", body)["results"])

    # Claims by QR code (docs/BANK_API.md): ``owner`` is for the dashboard's certificate,
    # which acts for the owner it logged in; an owner's own certificate leaves it out.

    def offer_claim(self, device_id: str, secret_hash: bytes) -> dict[str, Any]:
        return self.call("POST", f"/v1/devices/{device_id}/claimable", {"secret_hash": secret_hash.hex()})

    def claim_device(self, device_id: str, secret: str, owner: str | None = None) -> dict[str, Any]:
        path = f"/v1/overview/owners/{owner}/claim" if owner else "/v1/devices/claim"
        return self.call("POST", path, {"device_id": device_id, "secret": secret})

    def transfer_device(self, device_id: str, to: str, owner: str | None = None) -> dict[str, Any]:
        base = f"/v1/overview/owners/{owner}" if owner else "/v1"
        return self.call("POST", f"{base}/devices/{device_id}/transfer", {"to": to})

    def decommission(self, device_id: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/devices/{device_id}/decommission", {})

    def overview(self, owner: str | None = None) -> dict[str, Any]:
        return self.call("GET", f"/v1/overview/owners/{owner}" if owner else "/v1/overview")

    def operator_overview(self) -> dict[str, Any]:
        return self.call("GET", "/v1/overview/operator")

    # Policies (owner) and statements (owner, analyst; admin and auditor for anyone).

    def set_policy(
        self, policy: dict[str, Any] | None, device_id: str | None = None
    ) -> dict[str, Any] | None:
        """Sets the policy of one of the owner's devices, or (device_id None) the owner's
        default; ``policy`` None removes it. Returns the policy now set there."""
        path = "/v1/policies/" + (f"devices/{quote(device_id, safe='')}" if device_id else "default")
        answer = self.call("PUT", path, policy) if policy is not None else self.call("DELETE", path)
        return answer["policy"]

    def policies(self) -> dict[str, Any]:
        """{"default": policy or None, "devices": {device_id: policy}} of the owner."""
        return self.call("GET", "/v1/policies")

    def statement(
        self, start: str | None = None, end: str | None = None, account: str | None = None, fmt: str = "json"
    ) -> Any:
        """The caller's statement (or ``account``'s, for admin and auditor) for the days
        start..end (YYYY-MM-DD, UTC; default today): a dict, or CSV text with fmt="csv"."""
        query = urlencode({k: v for k, v in (("from", start), ("to", end), ("format", fmt)) if v})
        path = (f"/v1/statements/{quote(account, safe='')}" if account else "/v1/statement") + "?" + query
        if fmt == "csv":
            return self.text("GET", path)
        return self.call("GET", path)

    def healthz(self) -> bool:
        return bool(self.call("GET", "/healthz").get("ok"))


def _refused_handshake(exc: BaseException) -> str:
    """Who refused the handshake, when TLS says one side rejected the other's certificate:
    we refused the bank's (verification failed here), or the bank refused ours (its alert);
    "" for any other failure."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "we refused the bank's certificate"
    if isinstance(exc, ssl.SSLError):
        reason = (getattr(exc, "reason", "") or "").upper()
        if any(w in reason for w in ("CERTIFICATE", "UNKNOWN_CA", "ALERT")):
            return "the bank refused our certificate"
    return ""

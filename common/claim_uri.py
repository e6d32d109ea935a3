"""The claim URI of a device's sticker (docs/PROVISIONING.md "Claim by QR code"), read and
written in one place: by ``ecoin-provision`` (which makes it) and the dashboard (which
claims with it).

    ecoin:claim?v=1&device=dev-1&bank=https%3A%2F%2Fbank.lan%3A8443&secret=3q2-7wE...

``device`` is the device id, ``bank`` the bank's API URL (percent-encoded), ``secret`` the
one-time claim secret (22 to 128 characters of base64url; ecoin-provision draws 192 bits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from . import names

SCHEME = "ecoin"
VERSION = "1"
SECRET = re.compile(r"[A-Za-z0-9_-]{22,128}\Z")


class ClaimUriError(ValueError):
    """Not a claim URI this version reads; the message never repeats the secret."""


@dataclass(frozen=True)
class ClaimUri:
    device_id: str
    bank: str
    secret: str

    def __str__(self) -> str:
        bank = quote(self.bank, safe="")
        return f"{SCHEME}:claim?v={VERSION}&device={self.device_id}&bank={bank}&secret={self.secret}"

    @classmethod
    def parse(cls, text: str) -> ClaimUri:
        parts = urlsplit(text.strip())
        if parts.scheme != SCHEME or parts.path != "claim":
            raise ClaimUriError("not an ecoin claim URI (it starts ecoin:claim?)")
        fields = {k: v[0] for k, v in parse_qs(parts.query).items() if len(v) == 1}
        if fields.get("v") != VERSION:
            raise ClaimUriError(f"claim URI version {fields.get('v', '')[:8]!r}; version {VERSION} is read")
        missing = [k for k in ("device", "bank", "secret") if not fields.get(k)]
        if missing:
            raise ClaimUriError(f"the claim URI has no {', '.join(missing)}")
        if not names.is_id(fields["device"]):
            raise ClaimUriError(f"the claim URI's device id is not {names.ID_RULE}")
        if not fields["bank"].startswith("https://"):
            raise ClaimUriError("the claim URI's bank must be an https:// URL")
        if not SECRET.match(fields["secret"]):
            raise ClaimUriError("the claim URI's secret is not 22 to 128 characters of base64url")
        return cls(fields["device"], fields["bank"], fields["secret"])

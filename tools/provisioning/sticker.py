"""A device's claim URI (``ecoin.common.claim_uri``) and its QR code for the sticker
(docs/PROVISIONING.md "Claim by QR code").

At provisioning a one-time secret is drawn, the bank is told its SHA-256 only (``POST
/v1/devices/ID/claimable``), and the URI is printed as a QR code on the terminal and written
as PNG and SVG (0600: until the sticker is printed they are the key to the device) into
the bundle's ``sticker/`` folder, which stays on the host. Whoever holds the URI claims the
device once (``ecoin-provision claim URI``, or the dashboard). The QR codes are made by
segno (pure Python, ISO/IEC 18004, no image library needed).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import TextIO

import segno

from ecoin.common import files
from ecoin.common.bank_client import BankClient
from ecoin.common.claim_uri import ClaimUri

SECRET_BYTES = 24  # 192 bits: 32 characters of base64url
STICKER = "sticker"  # the bundle's folder of claim files (not flashed)


def new_secret() -> str:
    return base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).decode().rstrip("=")


def offer(client: BankClient, device_id: str, bank_url: str) -> ClaimUri:
    """Draws a secret and opens the device's claim at the bank (a new one voids the old)."""
    uri = ClaimUri(device_id, bank_url, new_secret())
    client.offer_claim(device_id, hashlib.sha256(uri.secret.encode()).digest())
    return uri


def write(uri: ClaimUri, folder: Path) -> dict[str, Path]:
    """Writes claim.png, claim.svg and claim.txt (the URI) into ``folder``, each 0600."""
    folder.mkdir(parents=True, exist_ok=True)
    qr = segno.make(str(uri), error="m")
    paths = {}
    for kind in ("png", "svg"):
        buf = io.BytesIO()
        extra = {"title": f"ecoin {uri.device_id}"} if kind == "svg" else {}
        qr.save(buf, kind=kind, scale=8, border=4, **extra)
        paths[kind] = folder / f"claim.{kind}"
        files.write_atomic(paths[kind], buf.getvalue(), 0o600)
    paths["txt"] = folder / "claim.txt"
    files.write_atomic(paths["txt"], str(uri) + "\n", 0o600)
    return paths


def show(uri: ClaimUri, out: TextIO) -> None:
    """The QR code on the terminal (half-block characters), for a phone to scan."""
    segno.make(str(uri), error="m").terminal(out=out, compact=True)

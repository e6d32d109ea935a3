"""The bank master key and what it protects: device keys at rest, and the minting of coins.

The master key is 32 random bytes in a file of mode 0600, kept apart from the database
(``ecoin-bank init`` creates it). From it, with HKDF, come two keys:

- the device key wrap key: device keys are stored as AES-256-GCM(nonce, key, aad=device id),
  so the database alone never reveals a device key;
- the mint key: coin i of a batch is HMAC-SHA256(mint key, batch nonce | i). The database
  keeps only the batch nonce and each coin's hash, so it holds nothing a coin can be
  computed from without the master key; the bank can still answer a repeated withdrawal or
  top-up with the very same coins (a lost answer never loses money).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ecoin.common import crypto, files

KEY_LEN = 32
_WRAP_INFO = b"ecoin/v1 bank device key wrap"
_MINT_INFO = b"ecoin/v1 bank mint"
_COIN_LABEL = b"ecoin/v1 coin\x00"


class VaultError(Exception):
    """The master key file is missing, insecure or malformed, or a sealed key is corrupt."""


def coin_hash(coin: bytes) -> bytes:
    """What the ledger stores for a coin: the first 16 bytes of its SHA-256."""
    return hashlib.sha256(coin).digest()[:16]


def create_master_key(path: str | Path) -> bool:
    """Creates the master key file (0600) unless it exists; True when it was created."""
    try:
        files.create_new(path, os.urandom(KEY_LEN), 0o600)
    except FileExistsError:
        return False
    return True


class Vault:
    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_LEN:
            raise VaultError("the master key must be 32 bytes")
        self._wrap = AESGCM(crypto.hkdf_sha256(master, b"", _WRAP_INFO, 32))
        self._mint = crypto.hkdf_sha256(master, b"", _MINT_INFO, 32)

    @classmethod
    def load(cls, path: str | Path) -> Vault:
        path = Path(path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise VaultError(f"{path} does not exist; run `ecoin-bank init`") from exc
        if mode & 0o077:
            raise VaultError(f"{path} has mode {mode:04o}; the master key must be 0600 (chmod 600 {path})")
        if len(data) != KEY_LEN:
            raise VaultError(f"{path} must hold exactly 32 bytes")
        return cls(data)

    def seal_device_key(self, device_id: str, key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, key, device_id.encode())

    def open_device_key(self, device_id: str, sealed: bytes) -> bytes:
        try:
            return self._wrap.decrypt(sealed[:12], sealed[12:], device_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise VaultError(f"the stored key of device {device_id} does not open") from exc

    def coins(self, nonce: bytes, count: int) -> list[bytes]:
        """The coins of a batch, recomputed from its nonce."""
        base = _COIN_LABEL + nonce
        return [hmac.digest(self._mint, base + i.to_bytes(4, "big"), "sha256") for i in range(count)]

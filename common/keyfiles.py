"""Reading a PKI directory: the file layout shared by every party (see docs/PKI.md).

Services load their certificates and the bank its coin keys from here; creating them is
``ecoin-pki`` (ecoin.tools.pki), which only operators run.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ecoin.common import crypto
from ecoin.protocol import session


class PKIError(Exception):
    """An expected PKI failure (bad name, missing or insecure file, refusal to overwrite)."""


def load_private(path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError as exc:
        raise PKIError(f"{path} does not exist; run `ecoin-pki init` or `ecoin-pki issue`") from exc
    if mode & 0o077:
        raise PKIError(f"{path} has mode {mode:04o}; private keys must be 0600 (chmod 600 {path})")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):  # garbage, or a key with a passphrase
        raise PKIError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"{path}: unsupported key type")
    return key


def leaf_paths(pki_dir: Path | str, role: str, name: str) -> tuple[Path, Path]:
    base = Path(pki_dir) / role / name
    return base.with_suffix(".crt"), base.with_suffix(".key")


def current_kid(pki_dir: Path | str) -> str:
    try:
        return (Path(pki_dir) / "coin" / "current").read_text().strip()
    except FileNotFoundError as exc:
        raise PKIError(f"no current coin key in {pki_dir}; run `ecoin-pki init`") from exc


def load_coin_public(pki_dir: Path | str, kid: str | bytes | None = None) -> tuple[bytes, tuple[int, int]]:
    """(kid bytes, (n, e)) of coin key ``kid`` (hex or bytes), or of the current one."""
    kid_hex = current_kid(pki_dir) if kid is None else kid.hex() if isinstance(kid, bytes) else kid
    path = Path(pki_dir) / "coin" / f"{kid_hex}.json"
    try:
        meta = json.loads(path.read_text())
        n, e = int(meta["n"], 16), int(meta["e"])
    except FileNotFoundError as exc:
        raise PKIError(f"no coin key {kid_hex} in {pki_dir}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PKIError(f"{path} is malformed") from exc
    kid_bytes = session.key_id(crypto, n)
    if kid_bytes.hex() != kid_hex or meta.get("kid") != kid_hex:
        raise PKIError(f"{path}: kid does not match its modulus")
    return kid_bytes, (n, e)


def load_coin_private(pki_dir: Path | str) -> dict[bytes, rsa.RSAPrivateKey]:
    """Every coin private key by kid. Each file must be mode 0600 and match its kid."""
    keys: dict[bytes, rsa.RSAPrivateKey] = {}
    for path in sorted((Path(pki_dir) / "coin").glob("*.key")):
        key = load_private(path)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PKIError(f"{path} is not an RSA key")
        kid = session.key_id(crypto, key.public_key().public_numbers().n)
        if kid.hex() != path.stem:
            raise PKIError(f"{path}: file name does not match the key's kid {kid.hex()}")
        keys[kid] = key
    if not keys:
        raise PKIError(f"no coin keys in {pki_dir}; run `ecoin-pki init`")
    return keys

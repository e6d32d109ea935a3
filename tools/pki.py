"""ecoin's PKI: the project CA, one TLS certificate per party, and the bank's RSA coin keys.

Layout of a PKI directory (see docs/PKI.md)::

    ca.crt ca.key                    the project CA (EC P-256, 10 years)
    <role>/<name>.crt <name>.key     one leaf per party, CN = name, OU = role (EC P-256, 2 years)
    coin/<kid>.key <kid>.json        the bank's RSA coin keys (PEM private; public numbers)
    coin/current                     the kid new coins are issued under

Private keys are created 0600 with O_EXCL, so nothing here ever overwrites a key silently.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ecoin.common import cli, crypto, files, names
from ecoin.common.keyfiles import (
    PKIError,
    current_kid,
    leaf_paths,
    load_private,
)
from ecoin.protocol import session

SERVER_ROLES = ("bank", "broker")
CLIENT_ROLES = ("analyst", "gateway", "owner", "admin", "auditor", "dashboard")
ROLES = SERVER_ROLES + CLIENT_ROLES
COIN_KEY_BITS = (2048, 3072)
CA_DAYS = 3650
LEAF_DAYS = 730
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
# The parties `init` creates; analysts, gateways and owners are issued one by one.
INIT_PARTIES = (("bank", "bank"), ("broker", "broker"), ("admin", "admin"), ("auditor", "auditor"))


# Files.


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        files.create_new(path, pem, 0o600)
    except FileExistsError as exc:
        raise PKIError(f"{path} exists; refusing to overwrite a private key") from exc


def _check_name(name: str) -> str:
    if not names.is_id(name):
        raise PKIError(f"invalid name {name!r}: use {names.ID_RULE}")
    return name


# Certificates.


def _subject(name: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _key_usage(*, signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(pki_dir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _subject("ecoin CA", "ca")
    cert = (
        _builder(subject, subject, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signature=False, cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(pki_dir / "ca.key", key)
    files.write_atomic(pki_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise PKIError(f"{path} does not exist") from None
    except ValueError:
        raise PKIError(f"{path}: not a PEM certificate") from None


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = load_private(pki_dir / "ca.key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{pki_dir / 'ca.key'} is not an EC key")
    cert = _load_cert(pki_dir / "ca.crt")
    # A certificate issued with this key but under another ca.crt would verify nowhere.
    if cert.public_key() != key.public_key() or not _is_ca(cert):
        raise PKIError(f"{pki_dir / 'ca.crt'} is not the CA certificate of {pki_dir / 'ca.key'}")
    return cert, key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys([*DEFAULT_HOSTS, *hosts]):  # ordered, no duplicates
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(sans)


def issue(
    pki_dir: Path | str, role: str, name: str, hosts: Sequence[str] = (), *, force: bool = False
) -> tuple[Path, Path]:
    """Issues a leaf certificate for ``name`` in ``role``; returns (cert_path, key_path).
    Server roles get serverAuth and a SAN (localhost, 127.0.0.1, ``hosts``); client roles
    get clientAuth only. Refuses to replace an existing one unless ``force``."""
    pki_dir = Path(pki_dir)
    if role not in ROLES:
        raise PKIError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    _check_name(name)
    server = role in SERVER_ROLES
    if hosts and not server:  # a client never needs to be reachable by name
        raise PKIError(f"--host applies only to server roles ({', '.join(SERVER_ROLES)})")
    # The bank names accounts by the CN alone, so a name belongs to one role.
    taken = [p.parent.name for p in pki_dir.glob(f"*/{name}.crt") if p.parent.name != role]
    if taken:
        raise PKIError(f"name {name!r} is already used by role {taken[0]}; names are unique across roles")
    cert_path, key_path = leaf_paths(pki_dir, role, name)
    if cert_path.exists() or key_path.exists():
        if not force:
            raise PKIError(f"{role}/{name} already exists; use --force to replace it")
        key_path.unlink(missing_ok=True)
    ca_cert, ca_key = _load_ca(pki_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_subject(name, role), ca_cert.subject, key.public_key(), LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signature=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key)
    files.write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


# Coin keys.


def new_coin_key(pki_dir: Path | str, bits: int = 2048) -> str:
    """Creates a coin key and makes it current; returns its kid (hex). Older keys stay, so
    coins issued under them can still be redeemed until the bank retires them."""
    if bits not in COIN_KEY_BITS:
        raise PKIError(f"coin keys are {' or '.join(map(str, COIN_KEY_BITS))} bits, not {bits}")
    if not (Path(pki_dir) / "ca.crt").is_file():  # a typo must not grow a stray coin key
        raise PKIError(f"{pki_dir} is not a PKI directory (no ca.crt); `ecoin-pki init` makes one")
    coin = Path(pki_dir) / "coin"
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = key.public_key().public_numbers()
    kid = session.key_id(crypto, numbers.n).hex()
    _write_key(coin / f"{kid}.key", key)
    meta = {
        "kid": kid,
        "n": format(numbers.n, "x"),
        "e": numbers.e,
        "bits": bits,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    files.write_atomic(coin / f"{kid}.json", json.dumps(meta, indent=1).encode())
    files.write_atomic(coin / "current", f"{kid}\n".encode())
    return kid


# Whole directory.


def init(pki_dir: Path | str, coin_key_bits: int = 2048, hosts: Sequence[str] = ()) -> list[str]:
    """Creates whatever of the CA, bank, broker, admin, auditor and the first coin key is
    missing, keeping what exists. Returns one line per item saying which."""
    pki_dir = Path(pki_dir)
    if pki_dir.exists() and not pki_dir.is_dir():
        raise PKIError(f"{pki_dir} is a file; a PKI is a directory")
    pki_dir.mkdir(parents=True, exist_ok=True)
    report = []
    have_ca = [(pki_dir / f).exists() for f in ("ca.crt", "ca.key")]
    if all(have_ca):
        report.append("kept ca")
    elif any(have_ca):
        raise PKIError(f"{pki_dir} has only one of ca.crt and ca.key; fix or remove it by hand")
    else:
        _make_ca(pki_dir)
        report.append("created ca")
    for role, name in INIT_PARTIES:
        if any(p.exists() for p in leaf_paths(pki_dir, role, name)):
            report.append(f"kept {role}/{name}")
        else:
            issue(pki_dir, role, name, hosts if role in SERVER_ROLES else ())
            report.append(f"created {role}/{name}")
    if (pki_dir / "coin" / "current").exists():
        report.append(f"kept coin key {current_kid(pki_dir)}")
    else:
        report.append(f"created coin key {new_coin_key(pki_dir, coin_key_bits)}")
    return report


def show(pki_dir: Path | str) -> list[str]:
    pki_dir = Path(pki_dir)
    if not (pki_dir / "ca.crt").exists():
        raise PKIError(f"{pki_dir} is not a PKI directory (no ca.crt)")
    lines = []
    for crt in [pki_dir / "ca.crt", *sorted(pki_dir.glob("*/*.crt"))]:
        cert = _load_cert(crt)
        label = "ca" if crt.parent == pki_dir else f"{crt.parent.name}/{crt.stem}"
        lines.append(f"{label:<24} until {cert.not_valid_after_utc:%Y-%m-%d}  serial {cert.serial_number:x}")
    current = current_kid(pki_dir) if (pki_dir / "coin" / "current").exists() else ""
    for meta_path in sorted((pki_dir / "coin").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        mark = " (current)" if meta["kid"] == current else ""
        lines.append(f"coin {meta['kid']}    {meta['bits']} bits, created {meta['created']}{mark}")
    return lines


# Command line.


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecoin-pki",
        description="Manage ecoin's PKI: the project CA, TLS certificates (CN = name, OU = role) "
        "and the bank's RSA coin keys. Private keys are written 0600 and never overwritten silently.",
        epilog="See docs/PKI.md for the layout and rotation.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    what = "create the CA, bank, broker, admin, auditor and a coin key (what is missing)"
    s = sub.add_parser("init", help=what, description=what)
    s.add_argument("dir", type=Path, help="PKI directory (created if needed)")
    s.add_argument("--coin-key-bits", type=int, choices=COIN_KEY_BITS, default=2048, help="default 2048")
    s.add_argument("--host", action="append", default=[], help="extra DNS name or IP for bank and broker")
    s.set_defaults(fn=_print(_init))
    s = sub.add_parser(
        "issue", help="issue a certificate for one party", description="issue a certificate for one party"
    )
    s.add_argument("dir", type=Path, help="PKI directory")
    s.add_argument("--role", required=True, choices=ROLES, help="what the certificate may do (its OU)")
    s.add_argument(
        "--name", required=True, help="CN: 1-32 of A-Z a-z 0-9 . _ -  (analyst id, gateway id, ...)"
    )
    s.add_argument("--host", action="append", default=[], help="extra DNS name or IP (server roles only)")
    s.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    s.set_defaults(fn=_print(_issue))
    s = sub.add_parser(
        "coin-key",
        help="add a coin key and make it current (old ones stay for redemption)",
        description="add a coin key and make it current (old ones stay for redemption)",
    )
    s.add_argument("dir", type=Path, help="PKI directory")
    s.add_argument("--bits", type=int, choices=COIN_KEY_BITS, default=2048, help="default 2048")
    s.set_defaults(fn=_print(_coin_key))
    s = sub.add_parser(
        "show", help="list the certificates and coin keys", description="list the certificates and coin keys"
    )
    s.add_argument("dir", type=Path, help="PKI directory")
    s.set_defaults(fn=_print(_show))
    return p


def _init(args: argparse.Namespace) -> list[str]:
    return init(args.dir, args.coin_key_bits, args.host)


def _issue(args: argparse.Namespace) -> list[str]:
    cert_path, _ = leaf_paths(args.dir, args.role, _check_name(args.name))
    old = _load_cert(cert_path) if cert_path.exists() else None
    cert_path, key_path = issue(args.dir, args.role, args.name, args.host, force=args.force)
    lines = [f"replaced {args.role}/{args.name} (old serial {old.serial_number:x})"] if old else []
    return [*lines, f"issued {cert_path} and {key_path}"]


def _coin_key(args: argparse.Namespace) -> list[str]:
    return [f"created coin key {new_coin_key(args.dir, args.bits)} (now current)"]


def _show(args: argparse.Namespace) -> list[str]:
    return show(args.dir)


def _print(fn: Callable[[argparse.Namespace], list[str]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print("\n".join(fn(args)))
        return 0

    return run


def main(argv: Sequence[str] | None = None) -> int:
    # A PKI error is the operator's to fix (a name, a file's mode, an existing key): usage.
    return cli.dispatch("ecoin-pki", _parser(), argv, usage=(PKIError,), runtime=(OSError,))


if __name__ == "__main__":
    sys.exit(main())

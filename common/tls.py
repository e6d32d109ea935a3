"""The one place that builds ecoin's TLS contexts, and reads who is on the other end.

Every party trusts only the project CA (never the system store), speaks TLS 1.2 or newer,
and authenticates with a certificate whose CN is its name and OU its role. OpenSSL checks
the extended key usage: a client certificate cannot serve, a server certificate cannot
log in as a client.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

StrPath = str | Path


class PeerIdentityError(Exception):
    """The peer presented no certificate, or a certificate has no CN or no OU."""


@contextmanager
def _named(what: str, *paths: StrPath) -> Iterator[None]:
    """Turns OpenSSL's nameless errors (``[Errno 2] No such file or directory``,
    ``[X509: KEY_VALUES_MISMATCH]``) into ones that name the files; same exception types."""
    try:
        yield
    except FileNotFoundError:
        missing = next((p for p in paths if not Path(p).is_file()), paths[0])
        raise FileNotFoundError(2, f"{what}: no such file", str(missing)) from None
    except ssl.SSLError as exc:
        raise ssl.SSLError(exc.errno, f"{what} {', '.join(map(str, paths))}: {exc.strerror or exc}") from None


def _base(protocol: int, cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with _named("certificate and key", cert, key):
        ctx.load_cert_chain(str(cert), str(key))
    with _named("CA certificate", ca):
        ctx.load_verify_locations(cafile=str(ca))  # the project CA only
    return ctx


def server_context(
    cert: StrPath, key: StrPath, ca: StrPath, *, require_client: bool = True
) -> ssl.SSLContext:
    """A server context; by default every client must show a certificate from the project CA."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    return ctx


def client_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """A client context: presents our certificate, verifies the server's against the project
    CA and checks its host name (the SAN holds localhost, 127.0.0.1 and any --host)."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx


def server_auth_context(ca: StrPath) -> ssl.SSLContext:
    """A client context that authenticates the server against the project CA only, for a
    client that logs in otherwise (a broker password). Never the system store."""
    if not ca:
        raise ValueError("a CA file is required: the server is checked against the project CA only")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with _named("CA certificate", ca):
        ctx.load_verify_locations(cafile=str(ca))
    return ctx


def expect_role(peer: ssl.SSLObject | ssl.SSLSocket | None, role: str) -> str:
    """Checks that the verified peer holds a certificate of ``role`` (its OU) and returns its
    name: a host name check alone would let the broker, whose certificate names the same
    hosts, answer as the bank."""
    name, got = peer_identity(peer)
    if got != role:
        raise PeerIdentityError(f"the server is {name!r} with role {got!r}, not a {role}")
    return name


def peer_identity(peer: ssl.SSLObject | ssl.SSLSocket | dict[str, Any] | None) -> tuple[str, str]:
    """(name, role) = (CN, OU) of the verified peer certificate. Takes an SSL object or
    socket, or the dict from its ``getpeercert()``."""
    info: Any = peer if isinstance(peer, dict) or peer is None else peer.getpeercert()
    if not info:
        raise PeerIdentityError("the peer presented no verified certificate")
    fields: dict[str, str] = {}
    for rdn in info.get("subject", ()):  # ((("commonName", "alice"),), (("organizationalUnitName", ...),))
        for attr, value in rdn:
            fields.setdefault(attr, value)
    return _name_and_role(fields.get("commonName"), fields.get("organizationalUnitName"))


def certificate_identity(path: StrPath) -> tuple[str, str]:
    """(name, role) of a certificate file by the rule ``peer_identity`` applies to a peer's:
    what the bank and the broker will take its holder for. ValueError if not a certificate."""
    from cryptography import x509  # only the commands that check their own files need it
    from cryptography.x509.oid import NameOID

    subject = x509.load_pem_x509_certificate(Path(path).read_bytes()).subject
    first = {}
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME):
        values = subject.get_attributes_for_oid(oid)
        first[oid] = str(values[0].value) if values else None
    return _name_and_role(first[NameOID.COMMON_NAME], first[NameOID.ORGANIZATIONAL_UNIT_NAME])


def _name_and_role(name: str | None, role: str | None) -> tuple[str, str]:
    if not name or not role:
        raise PeerIdentityError("the certificate has no CN or no OU")
    return name, role

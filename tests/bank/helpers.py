"""Constants and small helpers shared by the bank's tests."""

from __future__ import annotations

DEVICE_KEY = bytes(range(32))  # olive's dev1
OTHER_KEY = bytes(range(32, 64))  # oscar's dev2


def tls_connect(bank, role: str = "analyst", name: str = "alice", timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """A TLS connection to ``bank`` with that party's certificate, handshake done."""
    import socket

    from ecoin.common import tls

    base = bank.pki / role / name
    ctx = tls.client_context(f"{base}.crt", f"{base}.key", bank.pki / "ca.crt")
    sock = socket.create_connection(("127.0.0.1", bank.port), timeout=timeout)
    return ctx.wrap_socket(sock, server_hostname="127.0.0.1")


def exchange(bank, data: bytes, role: str = "analyst", name: str = "alice") -> bytes:  # type: ignore[no-untyped-def]
    """Sends exactly ``data`` and returns every byte the bank answers until it closes."""
    import ssl

    out = b""
    with tls_connect(bank, role, name) as conn:
        conn.sendall(data)
        try:
            while chunk := conn.recv(65536):
                out += chunk
        except (ssl.SSLError, ConnectionError, TimeoutError):
            pass
    return out


def populate(bank, funds: int) -> None:  # type: ignore[no-untyped-def]
    """olive (``funds`` units, device dev1) owns; alice and bob offer average."""
    bank.admin.create_account("olive", "owner")
    bank.admin.create_account("alice", "analyst", ["average"])
    bank.admin.create_account("bob", "analyst", ["average"])
    bank.admin.fund("olive", funds)
    with bank.client("owner", "olive") as olive:
        olive.register_device("dev1", DEVICE_KEY)

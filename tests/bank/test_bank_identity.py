"""The bank's clients check that the server is the bank, not merely a host the CA vouches
for: the broker's certificate names the same hosts and must not pass for the bank's."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from ecoin.common import tls
from ecoin.common.bank_client import BankClient
from ecoin.common.bank_errors import Unauthenticated


def test_a_server_holding_the_broker_certificate_is_not_taken_for_the_bank(pki):
    ctx = tls.server_context(pki / "broker" / "broker.crt", pki / "broker" / "broker.key", pki / "ca.crt")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def impostor() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                seen.append(tls_conn.recv(65536))  # whatever the client would send us
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    client = BankClient(
        f"https://127.0.0.1:{port}", pki / "owner" / "olive.crt", pki / "owner" / "olive.key", pki / "ca.crt"
    )
    with pytest.raises(Unauthenticated, match="role 'broker', not a bank"):
        client.register_device("dev-x", bytes(32))
    thread.join(timeout=10)
    listener.close()
    assert seen == [b""]  # the device key never left the client

"""The bank as a real process over mutual TLS: calls, roles, refusals and bad input."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ecoin.common import bank_errors as errors
from ecoin.common import crypto, keyfiles, tls
from ecoin.common.bank_client import BankClient, RedeemItem
from ecoin.protocol import session
from ecoin.testing.bank import BankProcess, operation_item
from ecoin.tools import pki as pki_tool

from .helpers import DEVICE_KEY, exchange, populate


@pytest.fixture(scope="module")
def bank(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BankProcess]:
    b = BankProcess(tmp_path_factory.mktemp("bank"), pki, workers=1).start()
    populate(b, 5_000)
    yield b
    b.stop()


def items_for(w, coins, service="average"):
    return [RedeemItem(*operation_item(w.public_key, w.kid, c, service)) for c in coins]


def raw_call(bank: BankProcess, method: str, path: str, body: bytes | None, role="analyst", name="alice"):
    """An HTTP exchange with exactly these bytes; returns (status, decoded JSON)."""
    ctx = tls.client_context(
        bank.pki / role / f"{name}.crt", bank.pki / role / f"{name}.key", bank.pki / "ca.crt"
    )
    conn = http.client.HTTPSConnection("127.0.0.1", bank.port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_end_to_end_over_mtls(bank):
    with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
        w = olive.withdraw("dev1", 20, request_id="e2e")
        assert len(w.coins) == 20 and w.kid == bytes.fromhex(keyfiles.current_kid(bank.pki))
        items = items_for(w, w.coins[:10])
        results = alice.redeem(items)
        assert all(r.ok for r in results)
        for item, r, coin in zip(items, results, w.coins, strict=False):
            assert (r.k_enc, r.k_mac) == session.session_keys(crypto, coin, item.op_id)
        again = alice.redeem(items[:1])[0]
        assert again.ok and again.k_enc == results[0].k_enc  # idempotent retry
        with bank.client("analyst", "bob") as bob:
            refused = bob.redeem(items[:1])[0]
            assert (refused.ok, refused.code) == (False, "already_spent")
        claims = olive.claim("dev1", w.coins[9:12])
        assert [c["state"] for c in claims] == ["redeemed", "refunded", "refunded"]
        assert alice.balance() == 10
        assert olive.withdraw("dev1", 20, request_id="e2e").coins == w.coins


def test_topup_through_a_gateway(bank):
    op_id, frame = session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 1, 4)
    with bank.client("gateway", "gw1") as gw:
        answer = gw.topup(bytes(frame))
        with pytest.raises(errors.ReplayedCounter):
            gw.topup(bytes(session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 1, 4)[1]))
    expires, coins = session.open_topup_response(crypto, DEVICE_KEY, answer, op_id, 1)
    assert len(coins) == 4 * 32


def test_roles_are_checked_on_every_call(bank):
    with bank.client("analyst", "alice") as alice:
        with pytest.raises(errors.Forbidden):
            alice.withdraw("dev1", 1)
        with pytest.raises(errors.Forbidden):
            alice.create_account("mallory", "owner")
        with pytest.raises(errors.Forbidden):
            alice.topup(b"x")
    with bank.client("owner", "olive") as olive, pytest.raises(errors.Forbidden):
        olive.redeem([RedeemItem(bytes(8), bytes(256), bytes(16), "average", bytes(32), bytes(32))])
    with bank.client("auditor", "auditor") as auditor:
        assert {a["id"] for a in auditor.accounts()} >= {"olive", "alice"}
        with pytest.raises(errors.Forbidden):
            auditor.fund("olive", 1)
    with bank.client("owner", "oscar") as oscar, pytest.raises(errors.UnknownAccount):
        oscar.balance()  # a valid certificate, but no account


def test_handshake_without_a_client_certificate_is_refused(bank):
    ctx = ssl.create_default_context(cafile=str(bank.pki / "ca.crt"))
    got = b""
    with socket.create_connection(("127.0.0.1", bank.port), timeout=10) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bank\r\n\r\n")
                got = conn.recv(100)
        except (ssl.SSLError, ConnectionError):
            pass
    assert got == b""


def test_a_certificate_from_another_ca_is_refused(bank, tmp_path):
    other = tmp_path / "other-pki"
    pki_tool.init(other)
    cert, key = pki_tool.issue(other, "analyst", "alice")
    # It trusts the real CA (so it reaches the bank) but shows a certificate of another CA.
    with (
        BankClient(bank.url, cert, key, bank.pki / "ca.crt") as impostor,
        pytest.raises(errors.Unauthenticated, match="the bank refused our certificate"),
    ):
        impostor.healthz()
    # The other way round: a client that does not trust the bank's CA says so.
    alice = bank.pki / "analyst" / "alice"
    with (
        BankClient(bank.url, f"{alice}.crt", f"{alice}.key", other / "ca.crt") as doubter,
        pytest.raises(errors.Unauthenticated, match="we refused the bank's certificate"),
    ):
        doubter.healthz()
    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{bank.metrics_port}/metrics", timeout=10).read().decode()
    )
    refused = [line for line in metrics.splitlines() if line.startswith("ecoin_bank_tls_refused_total")]
    assert refused and float(refused[0].split()[-1]) >= 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed"),
        (b"[1, 2]", 400, "malformed"),
        (b'{"items": "abc"}', 400, "malformed"),
        (b'{"items": [{"kid": 5, "header": "", "op_id": "", "service": "x"}]}', 400, "malformed"),
        (
            b'{"items": [{"kid": "00000000000000ff", "header": "!!!", "op_id": "00", "service": "x"}]}',
            400,
            "malformed",
        ),
        (b'{"items": []}', 400, "malformed"),
        (b"{}", 400, "malformed"),
        (b'{"items": [1e999]}', 400, "malformed"),
        (
            json.dumps(
                {
                    "items": [
                        {
                            "kid": "00" * 8,
                            "header": base64.b64encode(bytes(256)).decode(),
                            "op_id": "00" * 16,
                            "service": "x",
                            "digest": "00" * 32,
                            "tag": "00" * 32,
                            "not_after": "soon",
                        }
                    ]
                }
            ).encode(),
            400,
            "malformed",
        ),
        (json.dumps({"items": [{}] * 257}).encode(), 400, "batch_too_large"),
        (b" " * (1 << 20) + b"{}", 413, "too_large"),
    ],
)
def test_bad_input_gets_a_clear_4xx(bank, body, status, code):
    got_status, answer = raw_call(bank, "POST", "/v1/redeem", body)
    assert (got_status, answer["error"]["code"]) == (status, code)
    assert answer["error"]["message"]


def test_bad_fields_and_paths(bank):
    assert raw_call(bank, "POST", "/v1/nowhere", b"{}")[0] == 404
    assert raw_call(bank, "GET", "/v1/redeem", None)[0] == 404
    status, answer = raw_call(bank, "POST", "/v1/accounts/olive/fund", b'{"amount": true}', "admin", "admin")
    assert (status, answer["error"]["code"]) == (400, "malformed")
    status, answer = raw_call(
        bank, "POST", "/v1/devices/dev1/withdraw", b'{"count": 10001, "request_id": "x"}', "owner", "olive"
    )
    assert (status, answer["error"]["code"]) == (400, "malformed")
    status, answer = raw_call(
        bank, "POST", "/v1/devices", b'{"device_id": "d2", "device_key": "AAAA"}', "owner", "olive"
    )
    assert (status, answer["error"]["code"]) == (400, "malformed")
    # Still serving, and no traceback was written for any of it.
    with bank.client("analyst", "alice") as alice:
        assert alice.healthz()
    assert "Traceback" not in bank.log.read_text()


def test_connections_persist(bank):
    with bank.client("analyst", "alice") as alice:
        alice.healthz()
        first = alice._conn.sock if alice._conn else None
        for _ in range(5):
            alice.balance()
        assert first is not None and alice._conn is not None and alice._conn.sock is first


@pytest.mark.slow
def test_database_unavailable_gives_503_and_changes_nothing(pki, tmp_path):
    with BankProcess(tmp_path / "bank", pki, workers=0, busy_timeout_ms=200) as bank:
        bank.admin.create_account("olive", "owner")
        bank.admin.create_account("alice", "analyst", ["average"])
        bank.admin.fund("olive", 10)
        with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
            olive.register_device("dev1", DEVICE_KEY)
            w = olive.withdraw("dev1", 2)
            items = items_for(w, w.coins)
            blocker = sqlite3.connect(bank.db, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                with pytest.raises(errors.Unavailable):
                    alice.redeem(items)
                with pytest.raises(errors.Unavailable):
                    olive.withdraw("dev1", 1)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert all(r.ok for r in alice.redeem(items))  # nothing had been spent
            assert alice.balance() == 2 and olive.balance() == 8
        assert bank.cli("audit").returncode == 0


def test_metrics_port(bank):
    with bank.client("analyst", "alice") as alice:
        alice.balance()
    base = f"http://127.0.0.1:{bank.metrics_port}"
    assert json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read()) == {"ok": True}
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    assert 'ecoin_bank_requests_total{route="balance",status="200"}' in text
    assert "ecoin_bank_request_seconds_bucket" in text


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/redeem HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /v1/redeem HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/1.1 trailing\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"POST /v1/redeem HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ],
)
def test_ambiguous_or_bad_http_gets_400_with_a_status_line(bank, request_bytes):
    answer = exchange(bank, request_bytes)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1:2] == [b"400"], answer[:200]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "malformed"
    with bank.client("analyst", "alice") as alice:
        assert alice.healthz()


def test_a_non_owner_cannot_tell_whether_a_device_exists(bank):
    # The gateway relays a top-up for olive's dev1 (wrong key) and for a device that does not exist.
    known = bytes(session.seal_topup_request(crypto, bytes(32), "dev1", 99, 1)[1])
    unknown = bytes(session.seal_topup_request(crypto, bytes(32), "no-such-dev", 99, 1)[1])
    answers = []
    with bank.client("gateway", "gw1") as gw:
        for frame in (known, unknown):
            with pytest.raises(errors.BankError) as err:
                gw.topup(frame)
            answers.append((err.value.status, err.value.code, err.value.message))
    assert answers[0] == answers[1]
    # Another owner: withdrawing from and claiming for olive's device, and a missing one.
    with bank.client("owner", "oscar") as oscar:
        found = []
        for device in ("dev1", "no-such-dev"):
            for call in (lambda d: oscar.withdraw(d, 1), lambda d: oscar.claim(d, [bytes(32)])):
                with pytest.raises(errors.BankError) as err:
                    call(device)
                found.append((err.value.status, err.value.code, err.value.message.replace(device, "D")))
    assert found[0] == found[2] and found[1] == found[3]


def test_a_redemption_is_waited_for_until_its_not_after(bank):
    """A bank that stalls past the client's timeout but resumes before the items' not_after
    spends them: the client is still listening and gets the keys (given up, the device would
    be told FAILED for a coin that was paid)."""
    assert bank.proc is not None
    with bank.client("owner", "olive") as olive, bank.client("analyst", "alice", timeout=1.0) as alice:
        w = olive.withdraw("dev1", 1, request_id="stall")
        alice.balance()  # the connection is up before the stall
        item = RedeemItem(*operation_item(w.public_key, w.kid, w.coins[0], "average"), time.time() + 5)
        os.kill(bank.proc.pid, signal.SIGSTOP)
        resume = threading.Timer(2.5, os.kill, (bank.proc.pid, signal.SIGCONT))  # > 2 timeouts of 1 s
        resume.start()
        try:
            [result] = alice.redeem([item])
        finally:
            resume.join()
            os.kill(bank.proc.pid, signal.SIGCONT)
    assert result.ok


def test_a_repeat_answers_a_payment_already_made_and_spends_nothing(bank):
    """``repeat`` (an analyst whose answer was lost, asking once the bank is back past the
    deadline): the keys again for an operation this analyst paid for; ``not_spent`` for one
    nobody paid for, whose coin stays spendable; ``already_spent`` for a coin paid for
    another operation; never a spend."""
    with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
        w = olive.withdraw("dev1", 2, request_id="repeat")
        paid, unpaid = items_for(w, w.coins)
        past = time.time() - 60  # a repeat is past its deadline by nature
        [first] = alice.redeem([paid])
        again, nothing = alice.redeem(
            [replace(paid, not_after=past, repeat=True), replace(unpaid, not_after=past, repeat=True)]
        )
        assert (
            first.ok
            and again.ok
            and (again.k_enc, again.k_mac, again.iv) == (first.k_enc, first.k_mac, first.iv)
        )
        assert (nothing.ok, nothing.code) == (False, "not_spent")
        balance = alice.balance()
        other = RedeemItem(*operation_item(w.public_key, w.kid, w.coins[0], "average"), repeat=True)
        [stolen] = alice.redeem([other])  # the paid coin in another operation's header
        assert (stolen.ok, stolen.code) == (False, "already_spent")
        [later] = alice.redeem([unpaid])  # the repeat left it outstanding
        assert later.ok and alice.balance() == balance + 1
    status, answer = raw_call(
        bank, "POST", "/v1/redeem", json.dumps({"items": [{**_wire_item(unpaid), "repeat": 1}]}).encode()
    )
    assert (status, answer["error"]["code"]) == (400, "malformed") and "repeat" in answer["error"]["message"]


def _wire_item(i: RedeemItem) -> dict[str, object]:
    return {
        "kid": i.kid.hex(),
        "header": base64.b64encode(i.header).decode(),
        "op_id": i.op_id.hex(),
        "service": i.service,
        "digest": i.digest.hex(),
        "tag": i.tag.hex(),
    }

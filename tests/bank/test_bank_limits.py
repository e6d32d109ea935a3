"""The bank's limits (issue 13, finding 4), attacked on a real bank process: slowloris and
unfinished header blocks are closed within the deadline while a valid redemption goes
through, memory stays bounded, connection caps hold per caller."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.common.bank_client import BankClient, RedeemItem
from ecoin.common.bank_errors import BankError
from ecoin.testing.bank import BankProcess, operation_item
from ecoin.testing.servers import wait_until

from .helpers import populate, tls_connect

DEADLINE = 2.0  # the bank's idle, handshake and body deadlines here


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def bank(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BankProcess]:
    limits = {"idle_timeout_s": DEADLINE, "handshake_timeout_s": DEADLINE, "body_timeout_s": DEADLINE}
    b = BankProcess(tmp_path_factory.mktemp("bank"), pki, workers=1, max_connections_per_client=150, **limits)
    populate(b.start(), 100)
    yield b
    b.stop()


def redeem_one(bank: BankProcess) -> float:
    """One valid redemption from a fresh client; returns its time."""
    with bank.client("owner", "olive") as olive:
        w = olive.withdraw("dev1", 1)
    item = RedeemItem(*operation_item(w.public_key, w.kid, w.coins[0], "average"))
    started = time.monotonic()
    with bank.client("analyst", "alice") as alice:
        assert alice.redeem([item])[0].ok
    return time.monotonic() - started


class Closed:
    """Connections whose closing by the bank we time, reading (and dropping) answers."""

    def __init__(self) -> None:
        self.open: dict[socket.socket, float] = {}
        self.closed_after: list[float] = []

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.open[sock] = time.monotonic()

    def poll(self) -> None:
        for sock, since in list(self.open.items()):
            try:
                while sock.recv(65536):
                    pass
                gone = True  # b"": the bank closed it
            except (ssl.SSLWantReadError, BlockingIOError):
                gone = False
            except (OSError, ssl.SSLError):
                gone = True
            if gone:
                self.closed_after.append(time.monotonic() - since)
                del self.open[sock]
                sock.close()

    def trickle(self, data: bytes) -> None:
        for sock in list(self.open):
            try:
                sock.send(data)
            except (OSError, ssl.SSLError):
                pass

    def wait_all(self, timeout: float, every: float = 0.2, drip: bytes = b"") -> None:
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            if drip:
                self.trickle(drip)
            self.poll()
            time.sleep(every)


def _answers(client: BankClient) -> bool:
    """True once ``client`` is served again (its refused connections are counted down)."""
    try:
        return bool(client.healthz())
    except BankError:
        return False


def test_slow_and_unfinished_connections_are_closed_within_the_deadline(bank: BankProcess) -> None:
    slow = Closed()
    for _ in range(30):  # slowloris: a header block that never ends, one byte at a time
        conn = tls_connect(bank)
        conn.sendall(b"POST /v1/redeem HTTP/1.1\r\nHost: bank\r\nX-Slow: ")
        slow.add(conn)
    for _ in range(10):  # slow body: complete headers, then a trickle
        conn = tls_connect(bank)
        conn.sendall(b"POST /v1/redeem HTTP/1.1\r\nHost: bank\r\nContent-Length: 1000\r\n\r\n{")
        slow.add(conn)
    for _ in range(10):  # no handshake at all
        slow.add(socket.create_connection(("127.0.0.1", bank.port)))
    took = redeem_one(bank)  # meanwhile a real client is served at once
    slow.wait_all(timeout=4 * DEADLINE, drip=b"a")
    assert not slow.open, f"{len(slow.open)} connections still open after {4 * DEADLINE} s"
    assert max(slow.closed_after) < DEADLINE + 1.5, " ".join(f"{t:.2f}" for t in sorted(slow.closed_after))
    assert took < DEADLINE
    assert redeem_one(bank) < DEADLINE  # and after


def test_memory_stays_bounded_under_100_unfinished_header_blocks(bank: BankProcess) -> None:
    """Each connection sends a header block as large as an attacker likes (the audit's held
    ~4.9 MB each) and never ends it; the bank keeps at most its limits' worth of each."""
    assert bank.proc is not None
    pid = bank.proc.pid
    before = peak = rss_kib(pid)
    block = b"GET /healthz HTTP/1.1\r\nHost: bank\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"a" * 16000) for i in range(60)
    )
    held = Closed()
    for _ in range(100):
        conn = tls_connect(bank, timeout=5)
        try:
            conn.sendall(block)
        except (OSError, ssl.SSLError):
            pass  # refused mid-way: the bank stopped reading it
        held.add(conn)
        peak = max(peak, rss_kib(pid))
    deadline = time.monotonic() + 4 * DEADLINE
    while held.open and time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        held.poll()
        time.sleep(0.05)
    assert not held.open
    grew_mib = (peak - before) / 1024
    assert grew_mib < 32, f"the bank grew by {grew_mib:.0f} MiB"
    assert redeem_one(bank) < DEADLINE


def test_connections_per_caller_are_capped(pki: Path, tmp_path: Path) -> None:
    with BankProcess(tmp_path / "bank", pki, workers=0, max_connections_per_client=3) as bank:
        kept = [tls_connect(bank) for _ in range(3)]
        for conn in kept:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: bank\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        extra = tls_connect(bank)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: bank\r\n\r\n")
        try:
            got = extra.recv(65536)
        except (OSError, ssl.SSLError):
            got = b""
        assert got == b""  # closed at once, unanswered
        with bank.client("analyst", "bob") as bob:  # another caller is not affected
            assert bob.healthz()
        for conn in kept:
            conn.close()
        extra.close()
        with bank.client("analyst", "alice") as alice:  # and the caller's own count comes back down
            wait_until(lambda: _answers(alice), timeout=10, what="alice served again")

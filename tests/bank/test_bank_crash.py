"""SIGKILL during a redemption load, then a restart: nothing committed is lost, no coin is
spent twice or both refunded and redeemed, and `ecoin-bank audit` passes."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from ecoin.common import bank_errors as errors
from ecoin.common import crypto
from ecoin.common.bank_client import RedeemResult
from ecoin.protocol import session
from ecoin.testing.bank import BankProcess
from ecoin.testing.servers import eventually

from .helpers import DEVICE_KEY
from .test_bank_concurrency import headers

WORKERS = 8
COINS = 2_000
BATCH = 10


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_sigkill_during_redemptions_loses_nothing(
    pki: Path, tmp_path: Path, db: str, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("pg_dsn") if db == "postgres" else None
    bank = BankProcess(tmp_path / "bank", pki, db=dsn, workers=1).start()
    try:
        bank.admin.create_account("olive", "owner")
        bank.admin.create_account("alice", "analyst", ["average"])
        bank.admin.fund("olive", COINS + 100)
        olive = bank.client("owner", "olive")
        olive.register_device("dev1", DEVICE_KEY)
        w = olive.withdraw("dev1", COINS, request_id="all")
        items = headers(w.public_key, w.kid, w.coins)
        answered: dict[int, RedeemResult] = {}  # coin index -> the answer its client got
        sent: set[int] = set()
        progress = threading.Semaphore(0)

        def load(k: int) -> None:
            with bank.client("analyst", "alice", timeout=10) as alice:
                for start in range(k * BATCH, COINS, WORKERS * BATCH):
                    chunk = list(range(start, min(start + BATCH, COINS)))
                    sent.update(chunk)
                    try:
                        results = alice.redeem([items[i] for i in chunk])
                    except errors.BankError:
                        return  # the bank died: this batch is in doubt
                    answered.update(zip(chunk, results, strict=True))
                    progress.release()

        threads = [threading.Thread(target=load, args=(k,)) for k in range(WORKERS)]
        for t in threads:
            t.start()
        for _ in range(30):  # kill once the load is well under way
            assert progress.acquire(timeout=60)
        assert bank.proc is not None
        helpers = _children(bank.proc.pid)  # its decryption worker(s)
        assert helpers
        bank.kill()
        for t in threads:
            t.join()
        assert 0 < len(answered) < COINS

        bank.start()
        assert bank.cli("audit").returncode == 0
        # Every answer given before the crash stands; every coin's fate is recorded once.
        states = olive.claim("dev1", w.coins, refund=False)
        for i, r in answered.items():
            assert r.ok and states[i]["state"] == "redeemed" and states[i]["by"] == "alice"
        for i in set(range(COINS)) - sent:
            assert states[i]["state"] == "outstanding"
        redeemed = [i for i, s in enumerate(states) if s["state"] == "redeemed"]
        with bank.client("analyst", "alice") as alice:
            assert alice.balance() == len(redeemed)
            # Retrying everything (in-doubt batches included) gives the same keys; never a second credit.
            for start in range(0, COINS, 250):
                chunk = items[start : start + 250]
                for k, r in enumerate(alice.redeem(chunk)):
                    i = start + k
                    assert r.ok, (i, r.code)
                    assert (r.k_enc, r.k_mac) == session.session_keys(crypto, w.coins[i], chunk[k].op_id)
                    if i in answered:
                        assert r.iv == answered[i].iv and r.k_enc == answered[i].k_enc
            assert alice.balance() == COINS
        assert olive.balance() == 100
        audit = bank.cli("audit")
        assert "redeemed         2000" in audit.stdout and "refunded         0" in audit.stdout
        olive.close()
        # The killed bank's helper processes do not outlive it for long.
        assert eventually(lambda: not _alive(helpers), timeout=10)
    finally:
        bank.stop()


def _children(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_a_killed_decryption_worker_is_replaced(pki: Path, tmp_path: Path) -> None:
    with BankProcess(tmp_path / "bank", pki, workers=1) as bank:
        bank.admin.create_account("olive", "owner")
        bank.admin.create_account("alice", "analyst", ["average"])
        bank.admin.fund("olive", 10)
        with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
            olive.register_device("dev1", DEVICE_KEY)
            w = olive.withdraw("dev1", 4)
            items = headers(w.public_key, w.kid, w.coins)
            assert alice.redeem(items[:2])[0].ok
            assert bank.proc is not None
            workers = [
                p
                for p in _children(bank.proc.pid)
                if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
            assert len(workers) == 1
            os.kill(workers.pop(), signal.SIGKILL)
            assert all(r.ok for r in alice.redeem(items[2:]))
            assert alice.balance() == 4

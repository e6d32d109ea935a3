"""32 clients race to redeem the same 1,000 coins, each with its own header per coin (as if
32 devices held copies): every coin must be spent exactly once, and credits must match.
On SQLite with one bank process, and on PostgreSQL with two bank processes."""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from ecoin.common import crypto
from ecoin.common.bank_client import RedeemItem, RedeemResult
from ecoin.protocol import session
from ecoin.testing.bank import BankProcess, operation_item

from .helpers import DEVICE_KEY

CLIENTS = 32
COINS = 1_000
BATCH = 50
ANALYSTS = ("alice", "bob")


def headers(public: tuple[int, int], kid: bytes, coins: list[bytes]) -> list[RedeemItem]:
    """Fresh headers (new op_id each) for every coin, sealed as a device seals them."""
    return [RedeemItem(*operation_item(public, kid, coin, "average")) for coin in coins]


def race(banks: list[BankProcess]) -> None:
    bank = banks[0]
    bank.admin.create_account("olive", "owner")
    for name in ANALYSTS:
        bank.admin.create_account(name, "analyst", ["average"])
    bank.admin.fund("olive", COINS)
    with bank.client("owner", "olive") as olive:
        olive.register_device("dev1", DEVICE_KEY)
        w = olive.withdraw("dev1", COINS)
    plans = []
    for _ in range(CLIENTS):
        items = headers(w.public_key, w.kid, w.coins)
        order = random.sample(range(COINS), COINS)
        plans.append([(i, items[i]) for i in order])
    answers: list[list[tuple[int, RedeemItem, RedeemResult]]] = [[] for _ in range(CLIENTS)]
    failures: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def client(c: int) -> None:
        try:
            with banks[c % len(banks)].client("analyst", ANALYSTS[c % 2], timeout=120) as me:
                start.wait()
                for k in range(0, COINS, BATCH):
                    chunk = plans[c][k : k + BATCH]
                    results = me.redeem([item for _, item in chunk])
                    answers[c].extend((i, item, r) for (i, item), r in zip(chunk, results, strict=True))
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

    spent = Counter()
    credits = Counter()
    for c, got in enumerate(answers):
        assert len(got) == COINS
        for i, item, r in got:
            if r.ok:
                spent[i] += 1
                credits[ANALYSTS[c % 2]] += 1
                assert (r.k_enc, r.k_mac) == session.session_keys(crypto, w.coins[i], item.op_id)
            else:
                assert r.code == "already_spent"
    assert sorted(spent) == list(range(COINS)) and set(spent.values()) == {1}
    for name in ANALYSTS:
        with bank.client("analyst", name) as me:
            assert me.balance() == credits[name]
    assert sum(credits.values()) == COINS
    done = bank.cli("audit")
    assert "outstanding      0" in done.stdout and "redeemed         1000" in done.stdout


def test_race_on_sqlite(pki: Path, tmp_path: Path) -> None:
    with BankProcess(tmp_path / "bank", pki, workers=2) as bank:
        race([bank])


@pytest.mark.timeout(300)
def test_race_on_postgresql_with_two_banks(pki: Path, tmp_path: Path, pg_dsn: str) -> None:
    one = BankProcess(tmp_path / "one", pki, db=pg_dsn, workers=1)
    two = BankProcess(tmp_path / "two", pki, db=pg_dsn, workers=1)
    # Both instances must share one master key (it derives coins and wraps device keys).
    one.cli("init")
    (tmp_path / "two").mkdir(exist_ok=True)
    key = (tmp_path / "one" / "master.key").read_bytes()
    fd = os.open(tmp_path / "two" / "master.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key)
    os.close(fd)
    with one, two:
        race([one, two])

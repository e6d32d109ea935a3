"""Priced services end to end (issue 16): the real firmware on the MicroPython unix port, the
real broker, gateway, analysts and bank.

- A service priced at 3 coins is paid with 3 coins in one header: the analyst is credited 3
  per operation, and exactly the coins the device took are spent, while 1-coin services
  keep working beside it.
- A director that rewrites the advertised price cannot make a device pay more than its
  maximum: above it the device refuses and spends nothing; below the analyst's price the
  bank refuses and spends nothing (the claim refunds the coin); above the analyst's price
  but within the maximum, the bank spends only the price, the device learns it from the
  authenticated RESULT (``paid``) and keeps the excess coin for the claim, which refunds
  it; honest, it pays in full.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path

from ecoin.bank.vault import coin_hash
from ecoin.sim.demo import Demo
from ecoin.testing.hostile import HostileDirector
from ecoin.tools.provisioning import flash as flash_store
from ecoin.tools.provisioning.refund import claim_refunds

from .conftest import QUICK


def spends(ledger: Path, coins: list[bytes]) -> list[tuple[str, bytes] | None]:
    """Per coin: (analyst, op_id) of its spend, or None if the bank did not spend it."""
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT s.hash, a.name, s.op_id FROM spends s JOIN accounts a ON a.id = s.analyst")
        spent = {bytes(h): (name, bytes(op)) for h, name, op in rows}
    return [spent.get(coin_hash(c)) for c in coins]


def test_a_three_coin_operation_credits_three_and_spends_exactly_those_coins(tmp_path):
    demo = Demo(tmp_path, devices=1, ops=2, heap="72K", runtime="micropython", quiet=True, priced_ops=3)
    result = demo.run()
    assert demo.priced is not None
    console = demo.priced.sim.output()
    assert result["priced"] == {
        "service": "anomaly",
        "price": 3,
        "ops_ok": 3,
        "ops_failed": 0,
        "coins_paid": 9,
        "earned": 9,
    }, console[-3000:]
    assert (result["ops_ok"], result["ops_failed"], result["analyst_credits"]) == (
        2,
        0,
        2 + 9,
    )  # 1-coin ops too
    assert result["audit_ok"]
    flash = tmp_path / "flash" / "dev-priced"
    state = flash_store.read_state(flash)
    assert (state.next, state.pending_op, flash_store.read_in_doubt(flash)) == (9, None, [])
    coins = flash_store.read_coins(flash, state)
    paid = spends(tmp_path / "bank" / "bank.sqlite3", coins)
    assert all(p is not None and p[0] == "carol" for p in paid[:9]), paid[:9]
    assert paid[9:] == [None] * (len(coins) - 9)  # not one coin more
    # Three operations, each paid by three consecutive coins of one header.
    ops = [p[1] for p in paid[:9] if p is not None]
    assert list(Counter(ops).values()) == [3, 3, 3] and ops == sorted(ops, key=ops.index)


def test_a_director_rewriting_the_price_cannot_make_the_device_pay_more(
    tmp_path, mosquitto, bank, analysts, directed
):
    analysts("alice", "average", offers={"average": {"price": 2, "version": "2"}})  # 2 coins an operation
    owner = bank.client("owner", "olive")
    # Told 4 and 255 (above its maximum of 3): refused, nothing spent. Told 1 (below alice's
    # price of 2): it pays 1, the bank refuses the header whole. Told 3 (above alice's price,
    # within the maximum): it seals 3, the bank spends 2. Then the truth.
    director = HostileDirector(mosquitto.port, {}, prices=[4, 255, 1, 3, 2])
    config = {**QUICK, "max_ops": 3, "op_timeout": 6.0, "max_price": 3}
    device = directed("dev-p1", 20, config, director)
    flash = device.flash_dir
    console = device.output()
    refused = re.findall(r"collector: price (\d+) coins is above max_price 3 .*nothing spent", console)
    assert refused == ["4", "255"], console
    assert len(re.findall(r"collector: op \w{8} result ", console)) == 2, console
    assert len(re.findall(r"collector: op \w{8} failed ", console)) == 1, console
    overpaid = re.findall(r"collector: op \w{8} charged 2 of 3 coins; 1 kept for refund", console)
    assert len(overpaid) == 1, console
    state = flash_store.read_state(flash)
    assert state.next == 1 + 3 + 2  # the coins it agreed to, and no more
    coins = flash_store.read_coins(flash, state)[: state.next]
    paid = [p is not None for p in spends(tmp_path / "bank" / "bank.sqlite3", coins)]
    assert paid == [False, True, True, False, True, True]  # the told-3 header's third is not spent
    doubt = flash_store.read_in_doubt(flash)
    assert [(d.coin, d.reason) for d in doubt] == [(coins[0], 1), (coins[3], 15)], doubt
    balances = {a["id"]: a["balance"] for a in bank.admin.accounts()}
    assert balances["alice"] == 4  # two operations at 2 coins: the real price, never more
    report = claim_refunds(owner, "dev-p1", flash_dir=flash)
    # The 1-coin header paid nothing; the excess coin of the told-3 one was never spent.
    assert [c.state for c in report.claims] == ["refunded", "refunded"]
    assert owner.balance() == 100 - 20 + 2
    audit = bank.cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

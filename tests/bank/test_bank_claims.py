"""Claims by QR code, transfers and decommissioning on the real ledger (SQLite and
PostgreSQL): one pairing per secret, a second use refused and logged without the secret,
coins that move with the device, refunds and a revoked key at decommissioning, every step in
the audit chain, and the audit green; the dashboard's overview sees one owner's devices only."""

from __future__ import annotations

import logging

import pytest

from ecoin.bank import audit, overview
from ecoin.bank.claims import Claims, secret_hash
from ecoin.bank.ledger import Ledger
from ecoin.common import bank_errors as errors

SECRET = "q1w2e3r4t5y6u7i8o9p0aAsSdDfFgG"


def events(ledger: Ledger) -> list[str]:
    return [e[2] for e in ledger.store.run(lambda tx: tx.audit_entries(), write=False)]


def test_a_secret_pairs_its_device_once(ledger: Ledger, make_item, caplog: pytest.LogCaptureFixture):
    claims = Claims(ledger)
    coins = ledger.withdraw("olive", "dev1", 5, "r1").coins
    ledger.redeem("alice", [make_item(coins[0])])
    claims.offer("olive", "dev1", secret_hash(SECRET))
    with pytest.raises(errors.UnknownDevice):  # a wrong secret looks like no claim at all
        claims.claim("oscar", "dev1", SECRET[:-1] + "x")
    done = claims.claim("oscar", "dev1", SECRET)
    assert (done.owner, done.previous) == ("oscar", "olive")
    with caplog.at_level(logging.WARNING, "ecoin.bank"), pytest.raises(errors.AlreadyClaimed):
        claims.claim("olive", "dev1", SECRET)
    refused = [r for r in caplog.records if r.getMessage() == "claim_refused"]
    assert [r.code for r in refused] == ["unknown_device", "already_claimed"]  # type: ignore[attr-defined]
    assert SECRET not in caplog.text
    stored = ledger.store.run(lambda tx: tx.q("SELECT * FROM device_claims").fetchall(), write=False)
    assert SECRET.encode() not in repr(stored).encode() and len(stored) == 1
    # The device, with its 4 coins left, is oscar's now; olive sees nothing of it.
    assert [d["id"] for d in overview.owner(ledger, "olive")["devices"]] == []
    mine = overview.owner(ledger, "oscar")
    dev1 = next(d for d in mine["devices"] if d["id"] == "dev1")
    assert (dev1["coins_left"], dev1["redeemed"]) == (4, 1)
    assert mine["claims"] == [{"device": "dev1", "at": int(ledger.clock()), "from": "olive"}]
    with pytest.raises(errors.UnknownDevice):
        ledger.withdraw("olive", "dev1", 1, "r2")
    assert ledger.claim("oscar", "dev1", coins[1:2])[0]["state"] == "refunded"
    assert "claim" in events(ledger)
    report = audit.verify(ledger.store)
    assert report.ok, report.problems
    assert report.figures["claims"] == 1


def test_a_new_sticker_voids_the_old_one_and_a_used_secret_cannot_be_offered_again(ledger: Ledger):
    claims = Claims(ledger)
    claims.offer("olive", "dev1", secret_hash(SECRET))
    claims.offer("olive", "dev1", secret_hash(SECRET + "2"))
    with pytest.raises(errors.UnknownDevice):
        claims.claim("oscar", "dev1", SECRET)
    claims.claim("olive", "dev1", SECRET + "2")  # the owner claims its own device: no move
    with pytest.raises(errors.Exists):
        claims.offer("olive", "dev1", secret_hash(SECRET + "2"))
    with pytest.raises(errors.UnknownDevice):  # only the owner may offer
        claims.offer("oscar", "dev1", secret_hash("x" * 30))
    assert audit.verify(ledger.store).ok


def test_transfer_and_decommission_are_audited_and_refund_the_owner(ledger: Ledger, make_item):
    claims = Claims(ledger)
    coins = ledger.withdraw("olive", "dev1", 10, "r1").coins
    ledger.redeem("alice", [make_item(c) for c in coins[:3]])
    claims.offer("olive", "dev1", secret_hash(SECRET))
    claims.transfer("olive", "dev1", "oscar")
    with pytest.raises(errors.UnknownDevice):  # the open claim closed with the transfer
        claims.claim("olive", "dev1", SECRET)
    with pytest.raises(errors.UnknownDevice):
        claims.transfer("olive", "dev1", "olive")
    before = ledger.balance("oscar").balance
    assert claims.decommission("oscar", "dev1") == 7
    assert ledger.balance("oscar").balance == before + 7
    # Its key is revoked: the device is unknown to every call, its coins spent or refunded.
    with pytest.raises(errors.UnknownDevice):
        ledger.claim("oscar", "dev1", coins[3:4])
    assert ledger.redeem("bob", [make_item(coins[5])])[0]["code"] == "already_spent"
    key = ledger.store.run(lambda tx: tx.q("SELECT key_enc FROM devices WHERE id = 'dev1'").fetchone())
    assert bytes(key[0]) == b""
    with pytest.raises(errors.Exists):  # the id stays taken
        ledger.register_device("olive", "dev1", bytes(32))
    assert [e for e in events(ledger) if e in ("transfer", "decommission")] == ["transfer", "decommission"]
    report = audit.verify(ledger.store)
    assert report.ok, report.problems
    figures = report.figures
    assert (figures["transfers"], figures["decommissions"], figures["refunded"]) == (1, 1, 7)


def test_the_audit_notices_a_claim_without_its_entry(ledger: Ledger):
    Claims(ledger).offer("olive", "dev1", secret_hash(SECRET))
    ledger.store.run(lambda tx: tx.q("UPDATE device_claims SET claimed_by = 1, claimed = 1"))
    report = audit.verify(ledger.store)
    assert report.problems == ["1 claims used but the audit log records 0"]


def test_the_operator_overview_counts_the_last_hour(ledger: Ledger, make_item, clock):
    coins = ledger.withdraw("olive", "dev1", 4, "r1").coins
    ledger.redeem("alice", [make_item(c) for c in coins[:2]])
    clock.now += 120
    ledger.redeem("bob", [make_item(coins[2])])
    view = overview.operator(ledger)
    assert sum(view["redeemed_per_min"]) == 3 and view["redeemed_per_min"][-1] == 1
    assert sum(view["minted_per_min"]) == 4
    assert {a["id"]: a["earned"] for a in view["analysts"]} == {"alice": 2, "bob": 1}
    assert view["coins"] == {"outstanding": 1, "redeemed": 3, "refunded": 0}
    mine = overview.owner(ledger, "olive")["devices"][0]
    assert mine["ops_last_hour"] == 3 and mine["last_seen"] == int(clock.now)

"""Priced services: a header paying several coins is redeemed whole or not at all (issue 16),
on a real database, SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import base64

import pytest

from ecoin.bank import router
from ecoin.bank.audit import verify
from ecoin.common import bank_errors as errors

from .test_bank_ledger import keys_of


def priced(item, price):
    return item._replace(price=price)


def audit_ok(ledger) -> None:
    assert verify(ledger.store).problems == []


def test_a_three_coin_header_credits_three_and_spends_exactly_those(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 5, "w1").coins
    item = priced(make_item(b"".join(coins[:3])), 3)
    [r] = ledger.redeem("alice", [item])
    assert r["status"] == "ok" and r["coins"] == 3
    assert (r["k_enc"], r["k_mac"]) == keys_of(b"".join(coins[:3]), item.op_id)
    assert ledger.balance("alice").balance == 3
    states = [c["state"] for c in ledger.claim("olive", "dev1", coins, refund=False)]
    assert states == ["redeemed"] * 3 + ["outstanding"] * 2
    assert ledger.redeem("alice", [item]) == [r]  # an honest retry: the same keys, no new credit
    assert ledger.balance("alice").balance == 3
    audit_ok(ledger)


def test_a_header_below_the_price_spends_nothing_and_is_refunded(ledger, make_item):
    """The analyst raised its price after the device sealed (or a gateway lied about it):
    the bank spends none of the coins, and the owner's claim refunds them all."""
    coins = ledger.withdraw("olive", "dev1", 2, "w1").coins
    [r] = ledger.redeem("alice", [priced(make_item(b"".join(coins)), 3)])
    assert r["code"] == "price_not_covered"
    assert ledger.balance("alice").balance == 0
    assert [c["state"] for c in ledger.claim("olive", "dev1", coins)] == ["refunded"] * 2
    audit_ok(ledger)


def test_more_coins_than_the_price_spend_exactly_the_price(ledger, make_item):
    """A gateway told the device a price above the analyst's (STATUS is unauthenticated):
    the bank spends and credits the first ``price`` coins of the header, the others stay
    outstanding and the owner's claim refunds them; retries give the same answer."""
    coins = ledger.withdraw("olive", "dev1", 3, "w1").coins
    item = priced(make_item(b"".join(coins)), 2)
    [r] = ledger.redeem("alice", [item])
    assert r["status"] == "ok" and r["coins"] == 2
    assert (r["k_enc"], r["k_mac"]) == keys_of(b"".join(coins), item.op_id)  # the header's keys
    assert ledger.balance("alice").balance == 2
    assert ledger.redeem("alice", [item]) == [r]  # idempotent: no new spend, no new credit
    assert ledger.balance("alice").balance == 2
    states = [c["state"] for c in ledger.claim("olive", "dev1", coins)]
    assert states == ["redeemed", "redeemed", "refunded"]
    assert ledger.redeem("alice", [item]) == [r]  # the refund does not touch what was paid
    audit_ok(ledger)


def test_an_analyst_before_prices_is_paid_one_coin_of_a_larger_header(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 2, "w1").coins
    [r] = ledger.redeem("alice", [make_item(b"".join(coins))])  # no price: 1
    assert r["status"] == "ok" and r["coins"] == 1
    assert ledger.balance("alice").balance == 1
    assert [c["state"] for c in ledger.claim("olive", "dev1", coins)] == ["redeemed", "refunded"]
    audit_ok(ledger)


def test_one_spent_coin_in_a_header_spends_none_of_the_others(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 4, "w1").coins
    assert ledger.redeem("alice", [make_item(coins[1])])[0]["status"] == "ok"
    # coins 0, 1, 2 in one header, and in the same batch a header with coin 3 alone.
    reuse, alone = make_item(b"".join(coins[:3])), make_item(coins[3])
    results = ledger.redeem("alice", [priced(reuse, 3), alone])
    assert [r.get("code") for r in results] == ["already_spent", None]
    assert ledger.balance("alice").balance == 2
    states = [c["state"] for c in ledger.claim("olive", "dev1", coins)]
    assert states == ["refunded", "redeemed", "refunded", "redeemed"]
    audit_ok(ledger)


def test_two_headers_sharing_a_coin_in_one_batch_pay_once(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 3, "w1").coins
    a, b = priced(make_item(b"".join(coins[:2])), 2), priced(make_item(b"".join(coins[1:])), 2)
    results = ledger.redeem("alice", [a, b])
    assert [r.get("code") for r in results] == [None, "already_spent"]
    assert ledger.balance("alice").balance == 2
    assert [c["state"] for c in ledger.claim("olive", "dev1", coins)] == ["redeemed"] * 2 + ["refunded"]
    audit_ok(ledger)


def test_a_coin_twice_in_one_header_pays_nothing(ledger, make_item):
    coin = ledger.withdraw("olive", "dev1", 1, "w1").coins[0]
    [r] = ledger.redeem("alice", [priced(make_item(coin * 2), 2)])
    assert r["code"] == "malformed" and "twice" in r["message"]
    assert ledger.balance("alice").balance == 0
    audit_ok(ledger)


def test_an_unknown_coin_in_a_header_leaves_the_good_ones_outstanding(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 2, "w1").coins
    [r] = ledger.redeem("alice", [priced(make_item(coins[0] + bytes(32) + coins[1]), 3)])
    assert r["code"] == "unknown_coin"
    assert [c["state"] for c in ledger.claim("olive", "dev1", coins, refund=False)] == ["outstanding"] * 2
    audit_ok(ledger)


def test_the_stated_price_is_checked_at_the_door():
    raw = {
        "kid": "00" * 8,
        "header": base64.b64encode(bytes(256)).decode(),
        "op_id": "00" * 16,
        "service": "average",
        "digest": "00" * 32,
        "tag": "00" * 32,
    }
    assert router._item(raw, 0).price == 1  # an analyst before prices: price 1
    assert router._item({**raw, "price": 4}, 0).price == 4
    for bad in (0, 5, "3", True):
        with pytest.raises(errors.Malformed, match="price"):
            router._item({**raw, "price": bad}, 0)

"""Statements (SQLite and PostgreSQL): an owner's and an analyst's figures for a period sum
to the ledger (balances, the audit's figures) and the audit passes."""

from __future__ import annotations

import csv
import io

import pytest

from ecoin.bank import audit, books, policy
from ecoin.common import bank_errors as errors

DAY = 86_400


def _spend(ledger, make_item, analyst, coins, service="average"):
    results = ledger.redeem(analyst, [make_item(c, service) for c in coins])
    assert all(r["status"] == "ok" for r in results), results


def test_statements_sum_to_the_ledger_and_the_audit_passes(ledger, make_item, clock):
    start = policy.day_of(int(clock.now))
    olive = ledger.withdraw("olive", "dev1", 10, "w1").coins
    _spend(ledger, make_item, "alice", olive[:3])
    _spend(ledger, make_item, "alice", olive[3:4], "stats")
    clock.now += DAY
    _spend(ledger, make_item, "bob", olive[4:6])
    ledger.books.set_policy("olive", "dev1", {"analysts": ["alice"]})
    refused = ledger.redeem("bob", [make_item(olive[6])])[0]
    assert refused["code"] == policy.ANALYST
    ledger.claim("olive", "dev1", olive[6:8])  # the refused coin and one unused: refunded
    oscar = ledger.withdraw("oscar", "dev2", 3, "w2").coins
    _spend(ledger, make_item, "bob", oscar[:1])
    clock.now += 731 * DAY  # olive's and oscar's coins expire; a new batch after that
    assert ledger.expire() == 2 + 2
    late = ledger.withdraw("olive", "dev1", 2, "w3").coins
    _spend(ledger, make_item, "alice", late[:1])
    end = policy.day_of(int(clock.now))

    s = ledger.books.owner_statement("olive", start, end)
    assert (s["bought"], s["spent"], s["refunded"], s["expired"], s["outstanding"]) == (12, 7, 2, 2, 1)
    assert s["bought"] == s["spent"] + s["refunded"] + s["expired"] + s["outstanding"]
    assert s["spent_by_device"] == {"dev1": 7}
    assert s["spent_by_service"] == {"average": 6, "stats": 1}
    assert s["spent_by_analyst"] == {"alice": 5, "bob": 2}
    assert s["funded"] - s["bought"] + s["refunded"] + s["expired"] == s["balance"]
    assert s["balance"] == ledger.balance("olive").balance

    figures = audit.verify(ledger.store)
    assert figures.ok, figures.problems
    earned = {}
    for name in ("alice", "bob"):
        a = ledger.books.analyst_statement(name, start, end)
        assert a["earned"] == a["balance"] == ledger.balance(name).balance
        assert sum(r["coins"] for r in a["earned_by_day"]) == a["earned"]
        earned[name] = a["earned_by_service"]
    assert earned == {"alice": {"average": 4, "stats": 1}, "bob": {"average": 3}}
    spent = s["spent"] + ledger.books.owner_statement("oscar", start, end)["spent"]
    assert spent == figures.figures["redeemed"] == 8

    # A period holds only its own days: the first day, then the days after it.
    first = ledger.books.owner_statement("olive", start, start)
    assert (first["bought"], first["spent"], first["spent_by_analyst"]) == (10, 4, {"alice": 4})
    later = ledger.books.owner_statement("olive", start + 1, end)
    assert later["spent"] == s["spent"] - first["spent"] and later["bought"] == 2


def test_a_statement_as_csv_holds_every_figure(ledger, make_item, clock):
    coins = ledger.withdraw("olive", "dev1", 3, "w").coins
    _spend(ledger, make_item, "alice", coins[:2])
    s = ledger.books.owner_statement("olive")
    rows = list(csv.reader(io.StringIO(books.to_csv(s))))
    assert rows[0] == ["section", "key", "coins"]
    assert ["total", "bought", "3"] in rows and ["total", "spent", "2"] in rows
    assert ["spent_by_analyst", "alice", "2"] in rows and ["outstanding_by_device", "dev1", "1"] in rows
    a = books.to_csv(ledger.books.analyst_statement("alice"))
    assert f"earned_by_day,{books.date_text(policy.day_of(int(clock.now)))} average,2" in a


def test_bad_periods_and_accounts_are_refused(ledger):
    with pytest.raises(errors.Malformed, match="run forward"):
        ledger.books.owner_statement("olive", 20_000, 19_999)
    with pytest.raises(errors.Malformed, match="YYYY-MM-DD"):
        books.day_number("2026-13-01", "from")
    with pytest.raises(errors.UnknownAccount):
        ledger.books.owner_statement("alice")
    with pytest.raises(errors.UnknownAccount):
        ledger.books.analyst_statement("olive")

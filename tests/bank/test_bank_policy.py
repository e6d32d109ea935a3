"""Owner policies in the ledger (SQLite and PostgreSQL, the injected clock): every rule
refuses a redemption before anything is spent, the coin is refunded by a claim, caps roll
over with the UTC day and month, and the audit passes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from ecoin.bank import audit, policy
from ecoin.common import bank_errors as errors

DAY = 86_400


def _at(clock, date: str, hour: int = 12) -> None:
    clock.now = dt.datetime.fromisoformat(f"{date}T{hour:02d}:00:00+00:00").timestamp()


def _redeem(ledger, make_item, coins, analyst="alice", service="average"):
    return ledger.redeem(analyst, [make_item(c, service) for c in coins])


def _assert_refused_and_refundable(ledger, make_item, coin, code, analyst="alice", service="average"):
    before = (ledger.balance("olive").balance, ledger.balance(analyst).balance)
    [r] = _redeem(ledger, make_item, [coin], analyst, service)
    assert (r["status"], r["code"]) == ("refused", code)
    assert r["message"] == policy.MESSAGES[code]
    assert (ledger.balance("olive").balance, ledger.balance(analyst).balance) == before
    [c] = ledger.claim("olive", "dev1", [coin])
    assert c["state"] == "refunded"
    assert ledger.balance("olive").balance == before[0] + 1


@pytest.mark.parametrize(
    ("rules", "analyst", "service", "code"),
    [
        ({"services": ["stats"]}, "alice", "average", policy.SERVICE),
        ({"analysts": ["bob"]}, "alice", "average", policy.ANALYST),
        ({"not_before": 1_800_000_001}, "alice", "average", policy.WINDOW),
        ({"not_after": 1_799_999_999}, "alice", "average", policy.WINDOW),
        ({"daily_cap": 0}, "alice", "average", policy.DAILY),
        ({"monthly_cap": 0}, "alice", "average", policy.MONTHLY),
    ],
)
def test_each_rule_refuses_spends_nothing_and_the_claim_refunds(
    ledger, make_item, rules, analyst, service, code
):
    ledger.books.set_policy("olive", "dev1", rules)
    coin = ledger.withdraw("olive", "dev1", 1, "w").coins[0]
    _assert_refused_and_refundable(ledger, make_item, coin, code, analyst, service)
    assert audit.verify(ledger.store).ok


def test_allowed_payments_pass_and_the_default_applies_without_a_device_policy(ledger, make_item):
    ledger.books.set_policy("olive", None, {"services": ["stats"]})
    coins = ledger.withdraw("olive", "dev1", 3, "w").coins
    assert _redeem(ledger, make_item, coins[:1], "alice", "stats")[0]["status"] == "ok"
    assert _redeem(ledger, make_item, coins[1:2])[0]["code"] == policy.SERVICE  # the default
    ledger.books.set_policy("olive", "dev1", {"analysts": ["alice"]})  # replaces the default whole
    assert _redeem(ledger, make_item, coins[1:2])[0]["status"] == "ok"
    assert _redeem(ledger, make_item, coins[2:], "bob")[0]["code"] == policy.ANALYST
    ledger.books.set_policy("olive", "dev1", None)  # removed: the default again
    assert _redeem(ledger, make_item, coins[2:], "bob")[0]["code"] == policy.SERVICE
    # oscar's device is under no policy of olive's
    other = ledger.withdraw("oscar", "dev2", 1, "w").coins
    assert _redeem(ledger, make_item, other, "bob")[0]["status"] == "ok"
    assert audit.verify(ledger.store).ok


def test_daily_cap_counts_inside_one_batch_and_rolls_over_with_the_day(ledger, make_item, clock):
    _at(clock, "2027-03-30", 23)
    ledger.books.set_policy("olive", "dev1", {"daily_cap": 2})
    coins = ledger.withdraw("olive", "dev1", 5, "w").coins
    results = _redeem(ledger, make_item, coins[:3] + coins[:1])  # coin 0 again: not counted twice
    assert [r.get("code", "ok") for r in results] == ["ok", "ok", policy.DAILY, "already_spent"]
    assert ledger.balance("alice").balance == 2
    clock.now += 2 * 3600  # 01:00 the next day: a new day, the cap is free again
    assert [r.get("code", "ok") for r in _redeem(ledger, make_item, coins[2:5])] == ["ok", "ok", policy.DAILY]
    [c] = ledger.claim("olive", "dev1", coins[4:])
    assert c["state"] == "refunded"
    assert audit.verify(ledger.store).ok


def test_monthly_cap_counts_the_calendar_month(ledger, make_item, clock):
    _at(clock, "2027-01-30")
    ledger.books.set_policy("olive", "dev1", {"monthly_cap": 3, "daily_cap": 2})
    coins = ledger.withdraw("olive", "dev1", 6, "w").coins
    assert [r.get("code", "ok") for r in _redeem(ledger, make_item, coins[:3])] == ["ok", "ok", policy.DAILY]
    clock.now += DAY  # the 31st: one more this month
    assert [r.get("code", "ok") for r in _redeem(ledger, make_item, coins[2:4])] == ["ok", policy.MONTHLY]
    clock.now += DAY  # 1 February: a new month
    assert [r.get("code", "ok") for r in _redeem(ledger, make_item, coins[3:5])] == ["ok", "ok"]
    _assert_refused_and_refundable(ledger, make_item, coins[5], policy.DAILY)
    assert audit.verify(ledger.store).ok


def test_validity_window_opens_and_closes_on_the_clock(ledger, make_item, clock):
    start = int(clock.now) + 3600
    ledger.books.set_policy("olive", "dev1", {"not_before": start, "not_after": start + DAY})
    coins = ledger.withdraw("olive", "dev1", 3, "w").coins
    assert _redeem(ledger, make_item, coins[:1])[0]["code"] == policy.WINDOW
    clock.now = start
    assert _redeem(ledger, make_item, coins[:1])[0]["status"] == "ok"
    clock.now = start + DAY + 1
    _assert_refused_and_refundable(ledger, make_item, coins[1], policy.WINDOW)


def test_a_spent_coin_is_answered_again_whatever_the_policy_says_now(ledger, make_item):
    coin = ledger.withdraw("olive", "dev1", 1, "w").coins[0]
    item = make_item(coin)
    first = ledger.redeem("alice", [item])[0]
    ledger.books.set_policy("olive", "dev1", {"services": []})
    assert ledger.redeem("alice", [item])[0] == first  # the retry of a paid operation
    assert ledger.balance("alice").balance == 1


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ([], "JSON object"),
        ({"service": ["average"]}, "unknown policy field"),
        ({"services": "average"}, "'services' must be a list"),
        ({"services": ["Average!"]}, "is not a name"),
        ({"analysts": [7]}, "is not a name"),
        ({"daily_cap": -1}, "'daily_cap' must be an integer"),
        ({"monthly_cap": True}, "'monthly_cap' must be an integer"),
        ({"not_before": 10, "not_after": 5}, "'not_after' must not be before"),
    ],
)
def test_a_malformed_policy_is_refused_and_changes_nothing(ledger, raw, words):
    with pytest.raises(errors.Malformed, match=words):
        ledger.books.set_policy("olive", "dev1", raw)
    assert ledger.books.policies("olive") == {"default": None, "devices": {}}


def test_policies_of_another_owners_device_or_of_no_owner_are_refused(ledger):
    with pytest.raises(errors.UnknownDevice):
        ledger.books.set_policy("olive", "dev2", {"daily_cap": 1})
    with pytest.raises(errors.UnknownAccount):
        ledger.books.set_policy("alice", None, {"daily_cap": 1})


def test_every_policy_change_is_in_the_audit_chain(ledger):
    ledger.books.set_policy("olive", "dev1", {"daily_cap": 5, "services": ["stats", "average"]})
    ledger.books.set_policy("olive", None, {"not_after": 2_000_000_000})
    ledger.books.set_policy("olive", "dev1", None)
    entries = ledger.store.run(lambda tx: tx.audit_entries(), write=False)
    bodies = [b for _, _, event, b, _ in entries if event == "policy"]
    assert bodies == [
        '{"device":"dev1","owner":"olive","policy":{"daily_cap":5,"services":["average","stats"]}}',
        '{"device":null,"owner":"olive","policy":{"not_after":2000000000}}',
        '{"device":"dev1","owner":"olive","policy":null}',
    ]
    assert ledger.books.policies("olive") == {"default": {"not_after": 2_000_000_000}, "devices": {}}
    assert audit.verify(ledger.store).ok


def test_racing_redemptions_of_one_device_never_pass_its_cap(ledger, make_item):
    """Eight threads redeem different coins of one device at once: the device's row lock
    (and, on PostgreSQL, the retry after a serialisation failure) keeps the cap exact."""
    ledger.books.set_policy("olive", "dev1", {"daily_cap": 10})
    coins = ledger.withdraw("olive", "dev1", 40, "w").coins
    items = [make_item(c) for c in coins]
    start = threading.Barrier(8)
    codes: list[str] = []
    failures: list[BaseException] = []

    def client(k: int) -> None:
        try:
            start.wait()
            mine = items[k * 5 : k * 5 + 5]
            codes.extend(r.get("code", "ok") for r in ledger.redeem("bob" if k % 2 else "alice", mine))
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert sorted(set(codes)) == ["ok", policy.DAILY] and codes.count("ok") == 10
    assert ledger.balance("alice").balance + ledger.balance("bob").balance == 10
    report = audit.verify(ledger.store)
    assert report.ok and report.figures["redeemed"] == 10 and report.figures["outstanding"] == 30

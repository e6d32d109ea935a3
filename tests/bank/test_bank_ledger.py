"""The ledger's rules on a real database, SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import os
import threading

import pytest

from ecoin.bank.audit import verify
from ecoin.bank.keys import Opener
from ecoin.bank.ledger import DAY, Ledger
from ecoin.bank.vault import coin_hash
from ecoin.common import bank_errors as errors
from ecoin.common import crypto
from ecoin.protocol import session

from .helpers import DEVICE_KEY, OTHER_KEY


def keys_of(coin: bytes, op_id: bytes) -> tuple[bytes, bytes]:
    return session.session_keys(crypto, coin, op_id)


def assert_audit_ok(ledger) -> None:
    report = verify(ledger.store)
    assert report.problems == []


def test_redeem_spends_once_and_retry_is_idempotent(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 3, "w1").coins
    first = make_item(coins[0])
    [r] = ledger.redeem("alice", [first])
    assert r["status"] == "ok"
    assert (r["k_enc"], r["k_mac"]) == keys_of(coins[0], first.op_id)
    # The same analyst, same header and op_id: the same answer, no second credit.
    assert ledger.redeem("alice", [first]) == [r]
    assert ledger.balance("alice").balance == 1
    # Anyone else, or another op_id for the same coin: already spent.
    assert ledger.redeem("bob", [first])[0]["code"] == "already_spent"
    assert ledger.redeem("alice", [make_item(coins[0])])[0]["code"] == "already_spent"
    assert ledger.balance("bob").balance == 0
    assert_audit_ok(ledger)


def test_one_coin_buys_one_operation_whatever_the_readings(ledger, make_item):
    """The same coin and op_id under three different readings (each with a valid tag: the
    device itself made them): the first is paid, the other two are already spent, also when
    they come in the same batch, and the keys are never handed out for them."""
    coin = ledger.withdraw("olive", "dev1", 1, "w1").coins[0]
    op_id = os.urandom(16)
    ops = [make_item(coin, op_id=op_id, readings=b'{"n":%d}' % i) for i in range(3)]
    assert len({o.digest for o in ops}) == 3
    assert [r["status"] for r in ledger.redeem("alice", ops[:1])] == ["ok"]
    again = ledger.redeem("alice", [ops[1], ops[0], ops[2]])
    assert [r.get("code") for r in again] == ["already_spent", None, "already_spent"]
    assert ledger.balance("alice").balance == 1
    coin2 = ledger.withdraw("olive", "dev1", 1, "w2").coins[0]
    batch = [make_item(coin2, op_id=op_id, readings=b'{"n":%d}' % i) for i in range(3)]
    assert [r.get("code") for r in ledger.redeem("alice", batch)] == [None, "already_spent", "already_spent"]
    assert ledger.balance("alice").balance == 2
    assert_audit_ok(ledger)


def test_a_modified_operation_spends_nothing_and_is_refunded(ledger, make_item):
    coin = ledger.withdraw("olive", "dev1", 1, "w1").coins[0]
    item = make_item(coin)
    forged = item._replace(digest=crypto.sha256(b"one byte changed"))
    assert ledger.redeem("alice", [forged])[0]["code"] == "bad_tag"
    assert ledger.balance("alice").balance == 0
    [claimed] = ledger.claim("olive", "dev1", [coin])
    assert claimed["state"] == "refunded"
    assert ledger.balance("olive").balance == 10_000
    assert ledger.redeem("alice", [item])[0]["code"] == "already_spent"  # refunded: spent for good
    assert_audit_ok(ledger)


def test_an_item_past_its_not_after_spends_nothing_and_is_refunded(ledger, make_item):
    """A call that reached the bank after the analyst's device gave up (a stalled bank, a
    slow path) pays nothing; one still in time is paid as usual, and its retry past the
    deadline answers its keys again."""
    late, timely = ledger.withdraw("olive", "dev1", 2, "w1").coins
    now = ledger.clock()
    items = [
        make_item(late)._replace(not_after=now - 0.5),
        make_item(timely)._replace(not_after=now + 60),
    ]
    first = ledger.redeem("alice", items)
    assert [r.get("code") for r in first] == ["deadline_passed", None]
    assert ledger.balance("alice").balance == 1
    # A retry of both past their deadline (the first answer lost, the bank slow to restart):
    # the paid one gets its keys again, the other still nothing.
    retry = ledger.redeem("alice", [i._replace(not_after=now - 0.5) for i in items])
    assert [r.get("code") for r in retry] == ["deadline_passed", None] and retry[1] == first[1]
    assert ledger.balance("alice").balance == 1
    [claimed] = ledger.claim("olive", "dev1", [late])
    assert claimed["state"] == "refunded"
    assert_audit_ok(ledger)


def test_duplicates_inside_one_batch(ledger, make_item):
    coin = ledger.withdraw("olive", "dev1", 1, "w1").coins[0]
    a, b = make_item(coin), make_item(coin)
    results = ledger.redeem("alice", [a, a, b])
    assert [r["status"] for r in results] == ["ok", "ok", "refused"]
    assert results[2]["code"] == "already_spent"
    assert ledger.balance("alice").balance == 1
    assert_audit_ok(ledger)


def test_every_refusal_has_its_reason_and_leaves_the_coin_unspent(ledger, make_item, clock):
    coins = ledger.withdraw("olive", "dev1", 4, "w1").coins
    good = make_item(coins[0], "stats")
    variants = [
        {"op_id": os.urandom(16)},
        {"service": "average"},
        {"header": os.urandom(256)},
        {"header": good.header + bytes(128)},  # a 3072-bit header under a 2048-bit kid
        {"kid": b"\x00" * 8},
        {"digest": os.urandom(32)},  # the operation was modified on the way
        {"tag": os.urandom(32)},
    ]
    results = ledger.redeem(
        "bob",  # bob does not offer stats
        [good, *(good._replace(**v) for v in variants), make_item(os.urandom(32))],
    )
    codes = [r.get("code") for r in results]
    assert codes == [
        "not_authorised",
        *("malformed",) * 4,
        "unknown_key",
        "bad_tag",
        "bad_tag",
        "unknown_coin",
    ]
    assert all(r["message"] for r in results)
    # Every refused coin is still spendable by an authorised analyst.
    assert ledger.redeem("alice", [good])[0]["status"] == "ok"
    clock.now += 731 * DAY
    assert ledger.redeem("alice", [make_item(coins[1])])[0]["code"] == "expired"
    assert_audit_ok(ledger)


def test_withdraw_is_idempotent_per_request_id(ledger):
    first = ledger.withdraw("olive", "dev1", 5, "req-1")
    again = ledger.withdraw("olive", "dev1", 5, "req-1")
    assert again.coins == first.coins and again.expires == first.expires
    assert ledger.balance("olive").balance == 10_000 - 5
    with pytest.raises(errors.Exists):
        ledger.withdraw("olive", "dev1", 6, "req-1")
    other = ledger.withdraw("olive", "dev1", 5, "req-2")
    assert set(other.coins).isdisjoint(first.coins)
    assert_audit_ok(ledger)


def test_withdraw_refusals_change_nothing(ledger):
    with pytest.raises(errors.InsufficientFunds):
        ledger.withdraw("oscar", "dev2", 1_001, "big")
    with pytest.raises(errors.UnknownDevice):
        ledger.withdraw("olive", "dev2", 1, "not-mine")  # oscar's device
    with pytest.raises(errors.UnknownAccount):
        ledger.withdraw("alice", "dev1", 1, "analyst")
    assert ledger.balance("oscar").balance == 1_000
    # The failed request id is free again: nothing of it was kept.
    assert len(ledger.withdraw("oscar", "dev2", 10, "big").coins) == 10
    assert_audit_ok(ledger)


def test_topup_checks_mac_and_counter(ledger):
    op_id, frame = session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 7, 3)
    answer = ledger.topup(bytes(frame))
    expires, coins = session.open_topup_response(crypto, DEVICE_KEY, answer, op_id, 7)
    assert len(coins) == 3 * 32 and expires > 0
    # The very same request again (a lost answer): the same coins, no second debit.
    again = session.open_topup_response(crypto, DEVICE_KEY, ledger.topup(bytes(frame)), op_id, 7)
    assert again[1] == coins
    assert ledger.balance("olive").balance == 10_000 - 3
    # An old counter with a new op_id is a replay.
    with pytest.raises(errors.ReplayedCounter):
        ledger.topup(bytes(session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 7, 3)[1]))
    with pytest.raises(errors.ReplayedCounter):
        ledger.topup(bytes(session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 5, 3)[1]))
    # A wrong key or a flipped bit does not authenticate.
    forged = bytearray(session.seal_topup_request(crypto, DEVICE_KEY, "dev1", 8, 3)[1])
    forged[-1] ^= 1
    with pytest.raises(errors.Malformed):
        ledger.topup(bytes(forged))
    with pytest.raises(errors.Malformed):
        ledger.topup(b"\x01\x06garbage")
    with pytest.raises(errors.UnknownDevice):
        ledger.topup(bytes(session.seal_topup_request(crypto, DEVICE_KEY, "ghost", 1, 1)[1]))
    assert_audit_ok(ledger)


def test_topup_without_funds_does_not_burn_the_counter(ledger):
    ledger.withdraw("oscar", "dev2", 999, "drain")
    _, frame = session.seal_topup_request(crypto, OTHER_KEY, "dev2", 1, 5)
    with pytest.raises(errors.InsufficientFunds):
        ledger.topup(bytes(frame))
    ledger.fund("oscar", 10)
    op_id, frame = session.seal_topup_request(crypto, OTHER_KEY, "dev2", 1, 5)
    answer = ledger.topup(bytes(frame))
    assert len(session.open_topup_response(crypto, OTHER_KEY, answer, op_id, 1)[1]) == 5 * 32
    assert_audit_ok(ledger)


def test_claims_refund_only_unspent_coins_of_ones_own_device(ledger, make_item):
    coins = ledger.withdraw("olive", "dev1", 4, "w1").coins
    theirs = ledger.withdraw("oscar", "dev2", 1, "w2").coins
    ledger.redeem("alice", [make_item(coins[0])])
    results = ledger.claim("olive", "dev1", [coins[0], coins[1], theirs[0]])
    assert [r["state"] for r in results] == ["redeemed", "refunded", "unknown"]
    assert results[0]["by"] == "alice" and results[0]["at"] > 0
    assert ledger.claim("olive", "dev1", [coins[1]])[0]["state"] == "already_refunded"
    assert ledger.claim("olive", "dev1", [coins[2]], refund=False)[0]["state"] == "outstanding"
    # A refunded coin can never be redeemed after, and the owner got exactly one unit back.
    assert ledger.redeem("alice", [make_item(coins[1])])[0]["code"] == "already_spent"
    assert ledger.balance("olive").balance == 10_000 - 4 + 1
    with pytest.raises(errors.UnknownDevice):
        ledger.claim("oscar", "dev1", [coins[2]])
    assert_audit_ok(ledger)


def test_expiry_refunds_owners_and_purges(ledger, make_item, clock):
    coins = ledger.withdraw("olive", "dev1", 10, "w1").coins
    ledger.redeem("alice", [make_item(c) for c in coins[:3]])
    ledger.claim("olive", "dev1", coins[3:4])
    clock.now += 731 * DAY
    fresh = ledger.withdraw("olive", "dev1", 2, "w2").coins  # not expired
    assert ledger.expire() == 6
    assert ledger.expire() == 0  # a second run finds nothing: no double refund
    assert ledger.balance("olive").balance == 10_000 - 10 + 1 + 6 - 2
    assert ledger.redeem("alice", [make_item(coins[5])])[0]["code"] == "unknown_coin"
    assert ledger.redeem("alice", [make_item(fresh[0])])[0]["status"] == "ok"
    report = verify(ledger.store)
    assert report.problems == []
    assert report.figures["expired"] == 6 and report.figures["redeemed"] == 4


def test_accounts(ledger):
    with pytest.raises(errors.Exists):
        ledger.create_account("olive", "owner")
    with pytest.raises(errors.Malformed):
        ledger.create_account("bad name!", "owner")
    with pytest.raises(errors.Malformed):
        ledger.create_account("carol", "analyst", ["Not A Service"])
    with pytest.raises(errors.UnknownAccount):
        ledger.fund("alice", 5)  # analysts are paid by redemptions only
    assert ledger.fund("olive", 5, "f1").balance == 10_005
    assert ledger.fund("olive", 5, "f1").balance == 10_005  # a repeat changes nothing
    with pytest.raises(errors.Exists):
        ledger.fund("olive", 6, "f1")
    names = [a.name for a in ledger.accounts()]
    assert names == ["alice", "bob", "olive", "oscar"]
    assert_audit_ok(ledger)


def test_expiry_racing_redemptions_never_pays_twice(ledger, make_item, clock):
    """A purge on an instance whose clock runs ahead races redemptions on one whose clock
    lags: each coin ends redeemed or expired, never both, and the money adds up."""
    coins = ledger.withdraw("olive", "dev1", 300, "w1").coins
    items = [make_item(c) for c in coins]
    ahead = Ledger(ledger.store, ledger.vault, ledger.opener, clock=lambda: clock.now + 731 * DAY)
    answers: list[dict] = []
    go = threading.Barrier(2)

    def redeem() -> None:
        go.wait()
        for k in range(0, len(items), 10):
            answers.extend(ledger.redeem("alice", items[k : k + 10]))

    def purge() -> None:
        go.wait()
        expired.append(ahead.expire())

    expired: list[int] = []
    threads = [threading.Thread(target=redeem), threading.Thread(target=purge)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(a["status"] == "ok" for a in answers)
    assert {a.get("code") for a in answers if a["status"] != "ok"} <= {"unknown_coin", "expired"}
    assert ok + expired[0] == 300
    assert ledger.balance("alice").balance == ok
    assert ledger.balance("olive").balance == 10_000 - 300 + expired[0]
    assert_audit_ok(ledger)


def test_a_refused_debit_changes_no_balance(ledger):
    def attempt(tx):
        olive, pool = tx.account("olive"), tx.account("@coins")
        assert pool.id < olive.id  # the credit is applied first: it must be undone
        assert not tx.transfer(olive.id, pool.id, olive.balance + 1, "withdraw", 0)
        return tx.account("olive").balance, tx.account("@coins").balance

    assert ledger.store.run(attempt) == (10_000, 0)


def test_outstanding_owners_names_only_outstanding_coins(ledger, make_item):
    """The policy check's read: (owner, device) of each outstanding coin; a spent, refunded
    or never minted one is left out (its item is answered without the policy)."""
    a, b, c = ledger.withdraw("olive", "dev1", 3, "w1").coins
    d = ledger.withdraw("oscar", "dev2", 1, "w2").coins[0]
    assert ledger.redeem("alice", [make_item(a)])[0]["status"] == "ok"
    ledger.claim("olive", "dev1", [b])
    hashes = [coin_hash(x) for x in (a, b, c, d, os.urandom(32))]
    found = ledger.store.run(lambda tx: tx.outstanding_owners(hashes), write=False)
    olive, oscar = ledger.balance("olive").id, ledger.balance("oscar").id
    assert found == {hashes[2]: (olive, "dev1"), hashes[3]: (oscar, "dev2")}


def test_workers_answer_as_the_thread_does(ledger, make_item, pki):
    """The worker pipe's plain tuples (``keys._job``, ``_answer``, ``_result``) lose nothing:
    opened and refused items come back from a worker equal to the in-thread opening."""
    coins = ledger.withdraw("olive", "dev1", 2, "w1").coins
    good = make_item(coins[0], service="stats")
    bad_tag = make_item(coins[1])._replace(tag=bytes(32))
    junk = good._replace(header=os.urandom(len(good.header)), not_after=123.0)
    items = [good, bad_tag, junk, good._replace(not_after=1e9)]
    pooled = Opener(pki, 1)
    try:
        assert pooled.open(items) == ledger.opener.open(items)
    finally:
        pooled.close()
    assert [type(o).__name__ for o in ledger.opener.open(items)] == ["Opened", "Refused", "Refused", "Opened"]

"""The analyst survives every bank failure (issue 13, finding 1): a failed handshake, a
404, a 500 and a proxy's non-JSON 502 each get the operation answered (FAILED, coin not
spent), /healthz says 503 while the bank cannot redeem, and the analyst keeps answering."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ecoin.protocol import wire
from ecoin.testing.analyst import seal, withdraw
from ecoin.testing.faulty_bank import FaultyBank
from ecoin.testing.servers import wait_until

from .helpers import ANALYSTS, analyst, errors, results


@pytest.fixture
def faulty(pki, bank_server, tmp_path) -> Iterator[FaultyBank]:  # type: ignore[no-untyped-def]
    f = FaultyBank(pki, bank_server.url, ("analyst", "alice"), tmp_path).start()
    try:
        yield f
    finally:
        f.close()


def test_every_bank_failure_is_answered_and_the_analyst_goes_on(
    tmp_path, pki, broker, gw, bank_server, faulty
) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 6, ANALYSTS)
    ops = seal(coins, "average")
    bank = {"url": faulty.url, "wait_max_s": 2.0}
    with analyst(tmp_path, pki, broker.port, faulty, ["average"], bank=bank) as a:
        gw.send("average", ops[0].frame, b"0")
        assert gw.wait(1)
        assert a.healthy()
        for i, mode in enumerate(("handshake", "404", "500", "502"), start=1):
            faulty.mode = mode
            gw.send("average", ops[i].frame, b"%d" % i)
            wait_until(lambda: not a.healthy(), 20, f"{mode}: /healthz 503")
            assert gw.wait(i + 1), f"{mode}: the operation was never answered"
        faulty.mode = "relay"
        wait_until(a.healthy, 20, "healthy again once the bank answers")
        gw.send("average", ops[5].frame, b"5")
        assert gw.wait(6)
        events = a.events()
        metrics = a.metrics()
    assert results(gw, ops[:1])[0]["result"] == results(gw, ops[5:], start=5)[0]["result"] == 21.625
    assert [code for _, code in errors(gw, [b"1", b"2", b"3", b"4"])] == [wire.E_FAILED] * 4
    reasons = [e["reason"] for e in events if e["event"] == "operation_failed"]
    assert reasons == ["bank_unreachable", "bank_error:not_found", "bank_unreachable", "bank_unreachable"]
    assert {"bank_unreachable", "bank_error", "bank_reachable"} <= {e["event"] for e in events}
    assert metrics.get("ecoin_analyst_bank_retries_total", 0) > 3  # the transient ones were retried
    assert faulty.calls.get("404 /v1/redeem") == 1  # a 404 is not worth a retry
    log = a.log.read_text()
    assert "Traceback" not in log and "KeyError" not in log
    for secret in (*(c.hex() for c in coins.coins), ops[1].k_enc.hex()):
        assert secret not in log
    with bank_server.client("owner", "olive") as olive:  # the failed ones were never spent
        states = [r["state"] for r in olive.claim("dev-a", coins.coins, refund=False)]
    assert states == ["redeemed", "outstanding", "outstanding", "outstanding", "outstanding", "redeemed"]


def test_a_payment_whose_answer_was_lost_still_sends_its_result(
    tmp_path, pki, broker, gw, bank_server, faulty
) -> None:  # type: ignore[no-untyped-def]
    """The bank spends and its answer is lost (killed after the commit), and it is back only
    after the operation's deadline: the operation is answered FAILED in time, then, once the
    bank answers, asked for again with ``repeat`` (spending nothing) and its RESULT sent
    after all, for the gateway to relay late. An operation that was never paid gets no
    second answer and its coin stays outstanding."""
    coins = withdraw(bank_server, 2, ANALYSTS)
    ops = seal(coins, "average")
    with analyst(
        tmp_path, pki, broker.port, faulty, ["average"], bank={"url": faulty.url, "wait_max_s": 2.0}
    ) as a:
        faulty.mode = "lost"
        gw.send("average", ops[0].frame, b"0")
        assert gw.wait(1)
        faulty.mode = "500"  # not paid: the bank is failing before it spends
        gw.send("average", ops[1].frame, b"1")
        assert gw.wait(2)
        faulty.mode = "relay"
        assert gw.wait_arrivals(3), "no late RESULT"
        wait_until(a.healthy, 20, "healthy again")
        # logged once the broker acknowledged it, which may come after it reached us
        wait_until(lambda: any(e["event"] == "late_result" for e in a.events()), 10, "late_result logged")
        events = a.events()
        metrics = a.metrics()
    assert [wire.decode_error(f)[1] for f in (gw.replies[b"0"][0], gw.replies[b"1"][0])] == [
        wire.E_FAILED
    ] * 2
    late = gw.replies[b"0"][1:]
    assert len(late) == 1 and ops[0].open(late[0])["result"] == 21.625
    assert len(gw.replies[b"1"]) == 1  # never paid: FAILED was the whole truth
    assert {"late_result", "lost_answers_asked"} <= {e["event"] for e in events}
    assert metrics.get('ecoin_analyst_redemptions_total{result="repeat_ok"}') == 1
    assert metrics.get('ecoin_analyst_redemptions_total{result="repeat_not_spent"}') == 1
    with bank_server.client("owner", "olive") as olive:
        assert [r["state"] for r in olive.claim("dev-a", coins.coins, refund=False)] == [
            "redeemed",
            "outstanding",
        ]


def test_healthz_is_unhealthy_while_the_bank_is_unreachable(tmp_path, pki, broker, gw, bank_server) -> None:  # type: ignore[no-untyped-def]
    ops = seal(withdraw(bank_server, 2, ANALYSTS), "average")
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"], bank={"wait_max_s": 1.0}) as a:
        bank_server.kill()
        gw.send("average", ops[0].frame, b"0")
        wait_until(lambda: not a.healthy(), 20, "/healthz 503")
        assert gw.wait(1)  # answered FAILED at its deadline
        assert not a.healthy()  # idle, still unreachable: the probe keeps it unhealthy
        bank_server.start()
        wait_until(a.healthy, 20, "the probe seeing the bank back, with no operation needed")
        gw.send("average", ops[1].frame, b"1")
        assert gw.wait(2)
    assert errors(gw, [b"0"]) == [(ops[0].op_id, wire.E_FAILED)]
    assert results(gw, ops[1:], start=1)[0]["result"] == 21.625

"""The analyst service end to end: real Mosquitto (TLS, ACLs from the gateway's generator),
the real bank, analysts as real processes, operations sealed as a device seals them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ecoin.common import crypto, tls, topics
from ecoin.protocol import session, wire
from ecoin.testing.analyst import seal, withdraw
from ecoin.testing.broker import password
from ecoin.testing.servers import free_port, wait_until

from .helpers import ANALYSTS, analyst, errors, kind, results


class Announcements:
    """What a gateway sees on ecoin/svc/+/analyst/+ (retained): a second gateway, gw2 (its
    own login; the requester is gw1's, and one login is one connection)."""

    def __init__(self, port: int, pki: Path) -> None:
        self.seen: dict[str, bytes] = {}
        self.cond = threading.Condition()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        c.tls_set_context(
            tls.client_context(pki / "gateway/gw1.crt", pki / "gateway/gw1.key", pki / "ca.crt")
        )
        c.username_pw_set(topics.gateway_client("gw2", "up"), password(pki, "gw2"))
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.subscribe("ecoin/svc/+/analyst/+", qos=1)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.seen[msg.topic] = bytes(msg.payload)
            self.cond.notify_all()

    def wait(self, topic: str, present: bool, timeout: float = 15) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: bool(self.seen.get(topic)) == present, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# Serving.


def test_operations_are_redeemed_analysed_and_answered(tmp_path, pki, broker, gw, bank_server) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 30, ANALYSTS)
    average = seal(type(coins)(coins.coins[:25], coins.expires, coins.kid, coins.public_key), "average")
    stats = seal(type(coins)(coins.coins[25:], coins.expires, coins.kid, coins.public_key), "stats")
    watch = Announcements(broker.port, pki)
    try:
        with analyst(tmp_path, pki, broker.port, bank_server, ["average", "stats"]) as a:
            assert watch.wait("ecoin/svc/average/analyst/alice", True)
            ann = json.loads(watch.seen["ecoin/svc/stats/analyst/alice"])
            assert (
                ann["service"] == "stats" and ann["analyst"] == "alice" and ann["schema"]["type"] == "object"
            )
            gw.send_all("average", average)
            gw.send_all("stats", stats, start=100)
            assert gw.wait(30)
            assert {r["result"] for r in results(gw, average)} == {21.625}
            s = results(gw, stats, start=100)[0]["result"]
            assert s["count"] == 4 and s["min"] == 21.4 and s["max"] == 22.0
            # Counted once the reply is handed to the broker, so maybe just after it arrived.
            ok = 'ecoin_analyst_operations_total{outcome="ok",service="average"}'
            wait_until(lambda: a.metrics().get(ok) == 25, what="25 operations counted ok", timeout=10)
            m = a.metrics()
            assert m[ok] == 25
            assert m["ecoin_analyst_batch_size_count"] < 30  # some calls carried several headers
        assert watch.wait("ecoin/svc/average/analyst/alice", False)  # a clean stop clears it
    finally:
        watch.close()
    with bank_server.client("analyst", "alice") as alice:
        assert alice.balance() == 30
    assert all(len(v) == 1 for v in gw.replies.values())
    events = {e["event"] for e in a.events()}
    assert {"analyst_started", "broker_connected", "analyst_stopped"} <= events


def test_a_third_party_analyser_is_discovered_and_served(
    tmp_path, pki, broker, gw, bank_server, plugin_site
) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 1, ANALYSTS)
    readings = json.dumps(
        {"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [9, 1, 5]}
    ).encode()
    op = seal(coins, "median", readings)[0]
    with analyst(tmp_path, pki, broker.port, bank_server, ["median"], plugin_site=plugin_site):
        gw.send("median", op.frame, b"m")
        assert gw.wait(1)
    # "paid": the coins the bank spent, inside the authenticated result (PROTOCOL.md 5)
    assert op.open(gw.reply(b"m") or b"") == {"service": "median", "result": 5, "paid": 1}


def test_a_duplicate_operation_is_answered_once(tmp_path, pki, broker, gw, bank_server) -> None:  # type: ignore[no-untyped-def]
    ops = seal(withdraw(bank_server, 2, ANALYSTS), "average")
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"]) as a:
        gw.send("average", ops[0].frame, b"0")  # twice at once: the second finds it in progress
        gw.send("average", ops[0].frame, b"0")
        assert gw.wait(1)
        gw.send("average", ops[0].frame, b"0-again")  # and once after it was answered
        gw.send("average", ops[1].frame, b"1")  # a marker: answered after the duplicate
        assert gw.wait(2)
        assert a.metrics()["ecoin_analyst_duplicates_total"] == 2
    assert gw.reply(b"0-again") is None and len(gw.replies[b"0"]) == 1
    assert ops[0].open(gw.replies[b"0"][0])["result"] == 21.625


# Refusals: the device sees FAILED, the log says why, the analyst keeps serving.


def test_garbage_truncated_oversized_and_tampered_operations_are_refused(
    tmp_path, pki, broker, gw, bank_server
) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 4, ANALYSTS)
    good, tampered, spent_twice, last = seal(coins, "average")
    flipped = bytearray(tampered.frame)
    flipped[-1] ^= 1
    again = seal(type(coins)([coins.coins[2]], coins.expires, coins.kid, coins.public_key), "average")[0]
    bad = {
        b"garbage": os.urandom(300),
        b"empty": b"",
        b"truncated": good.frame[:-40],
        # over FRAME_MAX yet under the broker's packet limit (larger ones the broker refuses
        # and disconnects the sender for: tests/gateway/test_broker_limits.py)
        b"oversized": good.frame + bytes(wire.FRAME_MAX + 1 - len(good.frame)),
        b"version": b"\x01" + good.frame[1:],  # a v1 frame
        b"wrong-service": seal(withdraw(bank_server, 1, ANALYSTS), "stats")[0].frame,  # on the average topic
        b"tampered": bytes(flipped),
    }
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"]) as a:
        for corr, frame in bad.items():
            gw.send("average", frame, corr)
        gw.send("average", spent_twice.frame, b"first")
        assert gw.wait(len(bad) + 1)
        gw.send("average", again.frame, b"same-coin-new-op")  # the bank: already spent
        gw.send("average", good.frame, b"nowhere", reply_topic=None)  # no response topic: no answer
        gw.send("average", last.frame, b"last")
        assert gw.wait(len(bad) + 3)
        events = a.events()
        assert a.healthy()
    codes = dict(errors(gw, [*bad, b"same-coin-new-op"]))
    assert set(codes.values()) == {wire.E_FAILED}
    assert wire.decode_error(gw.reply(b"truncated") or b"")[0] == good.op_id  # the device can match it
    assert last.open(gw.reply(b"last") or b"")["result"] == 21.625
    assert gw.reply(b"nowhere") is None
    reasons = {e.get("reason") for e in events if e["event"] == "operation_failed"}
    expected = {
        "malformed",
        "truncated",
        "oversized",
        "wrong_service",
        "refused:bad_tag",
        "refused:already_spent",
    }
    assert expected | {"bad_response_topic"} <= reasons
    log = (tmp_path / "a1" / "analyst.log").read_text()
    for secret in (coins.coins[0].hex(), good.k_enc.hex(), good.k_mac.hex(), "21.5"):
        assert secret not in log


def test_one_coin_buys_one_analysis_and_a_modified_operation_spends_nothing(
    tmp_path, pki, broker, gw, bank_server
) -> None:  # type: ignore[no-untyped-def]
    """The same coin and op_id under three different readings, each with a valid tag (the
    device itself made them): one analysis, two FAILED, the analyst paid once. One byte of
    ciphertext or tag changed: FAILED, and the coin stays outstanding for the owner's claim.
    A ciphertext too long for the analyst's limit is refused before it pays."""
    coins = withdraw(bank_server, 4, ANALYSTS)
    one = [type(coins)([c], coins.expires, coins.kid, coins.public_key) for c in coins.coins]
    with bank_server.client("analyst", "alice") as alice:
        paid_before = alice.balance()
    op_id = os.urandom(16)
    cheats = []
    for i in range(3):
        readings = json.dumps({"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [i]})
        frame = session.seal_operation(
            crypto, coins.public_key, coins.kid, coins.coins[0], "average", readings.encode(), op_id=op_id
        )[3]
        cheats.append(bytes(frame))
    ct_flip, tag_flip = (
        bytearray(seal(one[1], "average")[0].frame),
        bytearray(seal(one[2], "average")[0].frame),
    )
    ct_flip[-40] ^= 1
    tag_flip[-1] ^= 1
    big = seal(one[3], "average", b"[" + b"1," * 200 + b"1]")[0]
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"], limits={"max_input_bytes": 256}) as a:
        for i, frame in enumerate(cheats):
            gw.send("average", frame, b"cheat-%d" % i)
        gw.send("average", bytes(ct_flip), b"ct")
        gw.send("average", bytes(tag_flip), b"tag")
        gw.send("average", big.frame, b"big")
        assert gw.wait(6)
        events = a.events()
    kinds = sorted(kind(gw.reply(b"cheat-%d" % i) or b"") for i in range(3))
    assert kinds == [wire.T_RESULT, wire.T_ERROR, wire.T_ERROR]
    assert {c for _, c in errors(gw, [b"ct", b"tag", b"big"])} == {wire.E_FAILED}
    reasons = sorted(e["reason"] for e in events if e["event"] == "operation_failed")
    assert (
        reasons
        == ["input_too_large", "refused:already_spent", "refused:already_spent"] + ["refused:bad_tag"] * 2
    )
    with bank_server.client("analyst", "alice") as alice:
        assert alice.balance() == paid_before + 1
    with bank_server.client("owner", "olive") as olive:
        assert [r["state"] for r in olive.claim("dev-a", coins.coins[1:])] == ["refunded"] * 3
    audit = bank_server.cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_hung_and_crashing_analysers_fail_their_operation_only(
    tmp_path, pki, broker, gw, bank_server, plugin_site
) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 3, ANALYSTS)
    one = [type(coins)([c], coins.expires, coins.kid, coins.public_key) for c in coins.coins]
    sleepy, crashy, average = seal(one[0], "sleepy")[0], seal(one[1], "crashy")[0], seal(one[2], "average")[0]
    limits = {"workers": 1, "analysis_timeout_s": 1.0}
    with analyst(
        tmp_path,
        pki,
        broker.port,
        bank_server,
        ["sleepy", "crashy", "average"],
        plugin_site=plugin_site,
        limits=limits,
    ) as a:
        gw.send("sleepy", sleepy.frame, b"sleepy")
        gw.send("crashy", crashy.frame, b"crashy")
        assert gw.wait(2)
        gw.send("average", average.frame, b"average")
        assert gw.wait(3)
        assert a.metrics()["ecoin_analyst_workers_replaced_total"] == 1
        events = a.events()
    assert dict(errors(gw, [b"sleepy", b"crashy"])) == {
        sleepy.op_id: wire.E_FAILED,
        crashy.op_id: wire.E_FAILED,
    }
    assert average.open(gw.reply(b"average") or b"")["result"] == 21.625
    reasons = {e["reason"] for e in events if e["event"] == "operation_failed"}
    assert reasons == {"analysis_timeout", "analysis_failed"}


# Load sharing, crashes and outages.


def test_two_analysts_share_a_service_and_a_killed_one_loses_nothing(
    tmp_path, pki, broker, gw, bank_server, plugin_site
) -> None:  # type: ignore[no-untyped-def]
    n = 160
    ops = seal(withdraw(bank_server, n, ANALYSTS), "slow")
    common = {"plugin_site": plugin_site, "broker": {"receive_maximum": 16}, "limits": {"workers": 2}}
    a1 = analyst(tmp_path, pki, broker.port, bank_server, ["slow"], name="a1", instance="1", **common).start()
    a2 = analyst(tmp_path, pki, broker.port, bank_server, ["slow"], name="a2", instance="2", **common).start()
    restarted = analyst(tmp_path, pki, broker.port, bank_server, ["slow"], name="a1", instance="1", **common)
    try:
        gw.send_all("slow", ops)
        assert gw.wait(n // 4)
        served_by_a1 = a1.metrics()['ecoin_analyst_operations_total{outcome="ok",service="slow"}']
        a1.kill()  # mid-load: it holds up to 16 operations, some already redeemed
        assert served_by_a1 > 0 and len(gw.replies) < n
        restarted.start()  # what systemd does: same instance, same MQTT session
        assert gw.wait(n, timeout=90)
        served_by_a2 = a2.metrics()['ecoin_analyst_operations_total{outcome="ok",service="slow"}']
        after_restart = restarted.metrics()['ecoin_analyst_operations_total{outcome="ok",service="slow"}']
    finally:
        for proc in (restarted, a2, a1):
            proc.stop()
    assert served_by_a2 > 0 and after_restart > 0
    assert {r["result"] for r in results(gw, ops)} == {21.625}  # every operation, a RESULT
    reconnects = [e for e in restarted.events() if e["event"] == "broker_connected"]
    assert reconnects[-1]["session_present"] is True  # the broker kept a1's operations for it
    with bank_server.client("analyst", "alice") as alice:
        assert alice.balance() == n  # each coin paid exactly once, retries included


def test_operations_wait_for_an_unreachable_bank(tmp_path, pki, broker, gw, bank_server) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 8, ANALYSTS)
    ops = seal(coins, "average")
    with analyst(
        tmp_path, pki, broker.port, bank_server, ["average"], bank={"wait_max_s": 12.0}
    ) as a:  # a loaded machine restarts a bank slowly
        bank_server.kill()
        gw.send_all("average", ops[:4])
        retries = "ecoin_analyst_bank_retries_total"
        wait_until(lambda: a.metrics().get(retries, 0) >= 2, what="the redeemer trying the bank again")
        assert not gw.replies  # nothing answered, nothing failed: they wait
        bank_server.start()
        assert gw.wait(4)
        assert {r["result"] for r in results(gw, ops[:4])} == {21.625}
        bank_server.kill()  # now longer than wait_max_s: the operations fail...
        gw.send_all("average", ops[4:], start=4)
        assert gw.wait(8, timeout=30)
        failed = errors(gw, [b"4", b"5", b"6", b"7"])
        bank_server.start()
        events = a.events()
    assert {code for _, code in failed} == {wire.E_FAILED}
    assert any(e["event"] == "bank_unreachable" for e in events)
    assert any(e["event"] == "bank_reachable" for e in events)
    assert {e["reason"] for e in events if e["event"] == "operation_failed"} == {"bank_unreachable"}
    with bank_server.client("owner", "olive") as olive:  # ...and their coins were never spent
        states = [r["state"] for r in olive.claim("dev-a", coins.coins, refund=False)]
    assert states[:4] == ["redeemed"] * 4 and states[4:] == ["outstanding"] * 4


def test_a_bank_refusal_spends_nothing(tmp_path, pki, broker, gw, bank_server) -> None:  # type: ignore[no-untyped-def]
    coins = withdraw(bank_server, 1, ANALYSTS)
    op = seal(coins, "average")[0]
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"], analyst="bob", name="bob") as b:
        gw.send("average", op.frame, b"0")  # the bank does not know bob for average
        assert gw.wait(1)
    assert errors(gw, [b"0"]) == [(op.op_id, wire.E_FAILED)]
    assert [e["reason"] for e in b.events() if e["event"] == "operation_failed"] == ["refused:not_authorised"]
    with bank_server.client("owner", "olive") as olive:
        assert olive.claim("dev-a", coins.coins, refund=False)[0]["state"] == "outstanding"


def test_a_killed_analyst_is_unannounced_by_its_last_will(tmp_path, pki, broker, bank_server) -> None:  # type: ignore[no-untyped-def]
    watch = Announcements(broker.port, pki)
    a = analyst(tmp_path, pki, broker.port, bank_server, ["average", "stats"])
    try:
        a.start()
        assert watch.wait("ecoin/svc/average/analyst/alice", True)
        assert watch.wait("ecoin/svc/stats/analyst/alice", True)
        a.kill()
        assert watch.wait("ecoin/svc/average/analyst/alice", False)  # one will per connection:
        assert watch.wait("ecoin/svc/stats/analyst/alice", False)  # one connection per service
    finally:
        a.stop()
        watch.close()


def test_an_operation_its_device_no_longer_waits_for_is_not_redeemed(  # type: ignore[no-untyped-def]
    tmp_path, pki, broker, gw, bank_server
) -> None:
    late, timely = seal(withdraw(bank_server, 2, ANALYSTS), "average")
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"]) as a:
        gw.send("average", late.frame, b"late", expiry_s=1)  # less than the answer needs
        gw.send("average", timely.frame, b"timely", expiry_s=20)
        assert gw.wait(2)
        events = a.events()
    assert set(dict(errors(gw, [b"late"])).values()) == {wire.E_FAILED}
    assert timely.open(gw.reply(b"timely") or b"")["result"] == 21.625
    assert {e.get("reason") for e in events if e["event"] == "operation_failed"} == {"deadline_passed"}
    with bank_server.client("analyst", "alice") as alice:
        assert alice.balance() == 1  # only the timely coin was spent: the late one stays refundable


def test_a_redemption_stuck_in_a_stopped_bank_pays_nothing(  # type: ignore[no-untyped-def]
    tmp_path, pki, broker, gw, bank_server
) -> None:
    """The bank stalls (SIGSTOP) with the analyst's call in its socket, and resumes after the
    device's deadline but before the call times out: it refuses the item as past its
    ``not_after`` instead of spending a coin whose device no longer waits."""
    coins = withdraw(bank_server, 2, ANALYSTS)
    first, op = seal(coins, "average")
    assert bank_server.proc is not None
    with analyst(tmp_path, pki, broker.port, bank_server, ["average"]) as a:
        gw.send("average", first.frame, b"first")  # the analyst's connection to the bank is up
        assert gw.wait(1)
        os.kill(bank_server.proc.pid, signal.SIGSTOP)
        try:
            gw.send("average", op.frame, b"0", expiry_s=3)  # not_after: 2 s from now
            time.sleep(4.0)  # the fault itself: the bank frozen past that, within the 10 s call timeout
        finally:
            os.kill(bank_server.proc.pid, signal.SIGCONT)
        assert gw.wait(2, timeout=30)
        events = a.events()
    assert refused(bank_server, "deadline_passed") == 1
    assert set(dict(errors(gw, [b"0"])).values()) == {wire.E_FAILED}
    assert [e.get("reason") for e in events if e["event"] == "operation_failed"] == [
        "refused:deadline_passed"
    ]
    with bank_server.client("owner", "olive") as olive:
        states = [r["state"] for r in olive.claim("dev-a", coins.coins, refund=False)]
    assert states == ["redeemed", "outstanding"]


def refused(bank: Any, code: str) -> float:
    url = f"http://127.0.0.1:{bank.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    rows = [
        ln for ln in text.splitlines() if ln.startswith(f'ecoin_bank_redemptions_total{{result="{code}"}}')
    ]
    return float(rows[0].split()[-1]) if rows else 0.0


def test_an_unreachable_broker_is_logged_with_its_address(tmp_path, pki, bank_server) -> None:  # type: ignore[no-untyped-def]
    """A dead broker is in the log, not only in /healthz (paho's failed connects never reach
    on_connect)."""
    port = free_port()  # nobody listens there
    a = analyst(tmp_path, pki, port, bank_server, ["average"]).start(wait=False)
    try:
        failed = lambda: [e for e in a.events() if e["event"] == "broker_connect_failed"]  # noqa: E731
        wait_until(failed, timeout=20, what="broker_connect_failed in the analyst's log")
        assert not a.healthy()
    finally:
        a.stop()
    event = failed()[0]
    assert event["broker"] == f"127.0.0.1:{port}" and "refused" in event["error"].lower(), event
    assert "Traceback" not in a.log.read_text()

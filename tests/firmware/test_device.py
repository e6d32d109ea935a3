"""The whole device (firmware in a 96 KiB MicroPython process: 66 KiB of firmware on the kind board, plus the
faithful sim board's model) against a real broker and the
test responder: results, failures put in doubt, no coin spent without a live service,
top-up, and many operations without a MemoryError."""

from __future__ import annotations

from ecoin.sim import SimDevice
from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto, eventually, wait_until
from ecoin.tools.provisioning.refund import device_status

from .conftest import MakeDevice


def run_to_end(dev: SimDevice, timeout: float = 60) -> str:
    """Runs the device until it has done its max_ops operations; returns its console."""
    dev.start()
    assert dev.wait(timeout) == 0
    out = dev.output()
    assert "collector done" in out, out
    assert "Traceback" not in out and "memory" not in out, out
    return out


def test_operations_get_verified_results(broker: Mosquitto, responder: Responder, make_device: MakeDevice):
    dev = make_device(broker.port, max_ops=5)
    out = run_to_end(dev)
    assert out.count("result {") == 5, out
    assert "ops=5 results=5 doubts=0 left=95 in_doubt=0" in out
    state = dev.state()
    assert (state.next, state.pending_op, dev.in_doubt()) == (5, None, [])
    assert [s.coin for s in responder.ops] == dev.coins[:5]  # in order, each once
    assert len({s.op_id for s in responder.ops}) == 5
    assert responder.errors == []


def test_failed_unanswered_and_forged_answers_put_the_coin_in_doubt(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    dev = make_device(broker.port, max_ops=2, op_timeout=0.5)
    for i, mode in enumerate(("error", "silent", "badtag")):
        responder.mode = mode
        out = run_to_end(dev)  # the console accumulates over the runs
        assert out.count("coin in doubt") == 2 * (i + 1), out
    assert "(error 1)" in out and "(timeout)" in out and "(bad)" in out
    doubts = dev.in_doubt()
    assert [d.reason for d in doubts] == [1, 1, 10, 10, 11, 11]  # FAILED, no answer, bad tag
    assert [d.coin for d in doubts] == dev.coins[:6]
    assert [d.op_id for d in doubts] == [s.op_id for s in responder.ops]
    assert dev.state().next == 6


def test_a_forged_result_first_does_not_end_the_operation(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """PROTOCOL 4.2: a RESULT that does not verify is ignored and the device keeps waiting;
    the genuine one that follows is accepted."""
    responder.mode = "badtag_first"
    dev = make_device(broker.port, max_ops=3, op_timeout=5.0)
    out = run_to_end(dev)
    assert out.count("result {") == 3, out
    assert out.count("bad answer ignored") == 3, out
    assert "ops=3 results=3 doubts=0" in out and dev.in_doubt() == []


def test_a_late_result_settles_its_doubt_and_a_replay_or_forgery_does_not(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """PROTOCOL 9: a RESULT after the device gave up (it waited at the broker for a frozen
    gateway, say) is verified under the keys of the coin in doubt, printed as late, and
    settles that doubt: the owner's claim no longer lists it, the next boot drops it. A
    replay of it, and a late RESULT with a bad tag, change nothing."""
    responder.mode = "hold"
    dev = make_device(broker.port, op_timeout=0.5, batch_seconds=0.2).start()
    wait_until(lambda: len(dev.in_doubt()) >= 2, 20, "two operations in doubt")
    responder.mode = "ok"
    (topic, first), (_, second) = responder.take_held()[:2]
    doubts = dev.in_doubt()
    assert [d.op_id for d in doubts[:2]] == [first[2:18], second[2:18]]
    forged = bytearray(second)
    forged[-1] ^= 1
    for frame in (first, first, bytes(forged)):  # delivered in order: the forgery comes last
        responder.client.publish(topic, frame, qos=1)
    assert dev.wait_for("late answer ignored"), dev.output()
    assert dev.settled() == {first[2:18]}
    responder.client.publish(topic, second, qos=1)
    assert dev.wait_for("late result", count=2), dev.output()
    dev.stop()
    out = dev.output()
    short = first[2:6].hex()
    assert f"collector: op {short} late result {{" in out and "; coin settled" in out, out
    assert out.count("late result") == 2 and out.count("late answer ignored") == 1, out
    open_ids = {bytes.fromhex(d["op_id"]) for d in device_status(flash_dir=dev.flash_dir)["in_doubt"]}
    assert open_ids == {d.op_id for d in dev.in_doubt()} - {first[2:18], second[2:18]}
    dev.start()  # the next boot drops the settled records
    assert dev.wait_for("store: settled in-doubt records removed"), dev.output()
    dev.stop()
    assert first[2:18] not in {d.op_id for d in dev.in_doubt()} and dev.settled() == set()


def test_an_error_of_any_code_puts_the_coin_in_doubt(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    responder.mode = "error99"
    dev = make_device(broker.port, max_ops=1, op_timeout=5.0)
    out = run_to_end(dev)
    assert "(error 1)" in out and "coin in doubt" in out, out
    assert [d.reason for d in dev.in_doubt()] == [1]  # as FAILED: never a reason of its own
    assert dev.state().next == 1  # the coin is never offered again


def test_no_coin_leaves_without_a_live_service(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    responder.mode = "unavailable"
    dev = make_device(broker.port, batch_seconds=0.05).start()
    eventually(lambda: responder.queries >= 3, timeout=20)  # asserted below, with the output
    dev.stop()
    assert responder.queries >= 3
    assert "service not live (status 2)" in dev.output()
    assert responder.ops == [] and dev.state().next == 0 and dev.in_doubt() == []


def test_top_up_adds_coins_from_the_bank(broker: Mosquitto, responder: Responder, make_device: MakeDevice):
    dev = make_device(broker.port, coins=3, low_coins=2, topup_count=5, max_ops=6)
    responder.device_keys["dev1"] = dev.device_key  # type: ignore[attr-defined]
    out = run_to_end(dev)
    assert "topup: 5 coins added" in out, out
    state = dev.state()
    assert state.counter == 1 and state.gen == 1
    sent = [s.coin for s in responder.ops]
    assert sent[:2] == dev.coins[:2] and len(set(sent)) == 6
    assert set(sent) <= set(dev.coins) | set(responder.minted)
    assert state.left == 3 + 5 - 6


def test_many_operations_with_1kib_readings_in_64k(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """1,000 operations of about 1 KiB of readings each, heap capped at 96 KiB: no MemoryError."""
    dev = make_device(
        broker.port, coins=1000, max_ops=1000, batch_max=170, sample_interval=0.0001, batch_seconds=5
    )
    out = run_to_end(dev, timeout=600)  # through the device's radio relay, on a shared machine
    assert "ops=1000 results=1000 doubts=0" in out, out[-2000:]
    assert all(s.values == 170 for s in responder.ops)

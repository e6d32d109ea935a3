"""What the gateway answers and relays (protocol v2, issue 12), against a real Mosquitto:

* a frame whose 18-byte prefix is readable but whose version or type is unknown gets
  ERROR REJECTED (never silence: the device would wait out its timeout);
* every well-formed reply for an awaited operation reaches the device, up to a bound, so a
  forged first reply cannot end a paid operation; none of them is followed by a TIMEOUT;
* an ERROR code the gateway does not know reaches the device as FAILED;
* a RESULT after the operation's deadline still reaches the device for LATE_GRACE_S (its
  device settles the coin it holds in doubt, PROTOCOL 9), up to the same bound; an ERROR
  then, or a RESULT after the grace period, is dropped.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.gateway import awaiting
from ecoin.gateway import router as router_mod
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import Device, EchoAnalyst, config, operation, result_for, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto

OTHER_VERSIONS = sorted({0, 1, wire.VERSION + 1, 255} - {wire.VERSION})  # 1 is "v1" once v2 lands


def _with_prefix(frame: bytes, version: int | None = None, ftype: int | None = None) -> bytes:
    b = bytearray(frame)
    if version is not None:
        b[0] = version
    if ftype is not None:
        b[1] = ftype
    return bytes(b)


@pytest.mark.parametrize(
    "frame",
    [_with_prefix(operation(), version=v) for v in OTHER_VERSIONS]
    + [_with_prefix(operation(), ftype=t) for t in (0, 8, 9, 255)],
    ids=[f"version-{v}" for v in OTHER_VERSIONS] + [f"type-{t}" for t in (0, 8, 9, 255)],
)
def test_unknown_version_or_type_is_rejected(gateway: Gateway, mosquitto: Mosquitto, frame: bytes) -> None:
    dev = Device(mosquitto.port, "dev-v").start()
    try:
        answer = dev.ask(frame)
        assert answer[0] == wire.VERSION  # the answer speaks the gateway's version
        assert wire.decode_error(answer) == (frame[2:18], wire.E_REJECTED)
        assert metric(gateway, 'ecoin_gateway_malformed_total{source="mqtt"}') == 1
        assert metric(gateway, "ecoin_gateway_forwarded_total") == 0
    finally:
        dev.stop()


class ScriptedAnalyst(EchoAnalyst):
    """Answers each operation with the frames ``script`` builds from it, in order."""

    def __init__(self, port: int, script: Callable[[bytes], list[bytes]]) -> None:
        super().__init__(port, ("scripted",), name="s1")
        self.script = script
        self.asked: dict[bytes, Any] = {}  # op_id -> the request's properties, to answer later

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.asked[bytes(msg.payload)[2:18]] = msg.properties
        self.answer(bytes(msg.payload)[2:18], self.script(bytes(msg.payload)))

    def answer(self, op_id: bytes, replies: list[bytes]) -> None:
        asked = self.asked[op_id]
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = asked.CorrelationData
        for reply in replies:
            self.client.publish(asked.ResponseTopic, reply, 1, properties=props)


@pytest.fixture
def scripted(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[Gateway, ScriptedAnalyst, Device]]:
    holder: dict[str, Callable[[bytes], list[bytes]]] = {}
    analyst = ScriptedAnalyst(mosquitto.port, lambda op: holder["script"](op))
    analyst.client.on_message = analyst._message
    analyst.start()
    gw = Gateway(config(tmp_path, mosquitto.port, op_timeout_s=1.0)).start()
    dev = Device(mosquitto.port, "dev-s").start()
    gw.holder = holder  # type: ignore[attr-defined]
    try:
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("scripted"),
            what="gateway up",
        )
        yield gw, analyst, dev
    finally:
        dev.stop()
        gw.stop()
        analyst.stop()


def _expired(gw: Gateway) -> Callable[[], bool]:
    return lambda: metric(gw, "ecoin_gateway_pending") == 0 and not len(gw.router.awaiting)


def test_a_forged_first_reply_does_not_end_the_operation(scripted) -> None:  # type: ignore[no-untyped-def]
    gw, _, dev = scripted
    forged: list[bytes] = []

    def forged_then_genuine(op: bytes) -> list[bytes]:
        forged.append(result_for(op))  # right op_id and shape, a tag nobody can check here
        return [forged[-1], result_for(op)]

    gw.holder["script"] = forged_then_genuine
    op = operation("scripted")
    dev.send(op)
    with dev.cond:
        assert dev.cond.wait_for(lambda: len(dev.answers[op[2:18]]) == 2, 10), dev.answers
    got = dev.answers[op[2:18]]
    assert got[0] == forged[0] and got[1] != forged[0]  # both relayed, in order
    wait_until(_expired(gw), what="the operation's deadline")
    assert [wire.frame_type(f)[0] for f in dev.answers[op[2:18]]] == [wire.T_RESULT] * 2  # no TIMEOUT


def test_replies_per_operation_are_bounded(scripted) -> None:  # type: ignore[no-untyped-def]
    gw, _, dev = scripted
    gw.holder["script"] = lambda op: [result_for(op) for _ in range(3 * awaiting.REPLIES_MAX)]
    op = operation("scripted")
    dev.send(op)
    wait_until(
        lambda: metric(gw, "ecoin_gateway_late_replies_total") == 2 * awaiting.REPLIES_MAX,
        what="the extra replies",
    )
    wait_until(lambda: len(dev.answers[op[2:18]]) >= awaiting.REPLIES_MAX, what="the relayed replies")
    probe = operation("scripted")  # answered after every earlier frame reached the device
    gw.holder["script"] = lambda op: [result_for(op)]
    dev.ask(probe)
    assert len(dev.answers[op[2:18]]) == awaiting.REPLIES_MAX


def test_malformed_or_foreign_replies_are_not_relayed(scripted) -> None:  # type: ignore[no-untyped-def]
    gw, _, dev = scripted

    def junk_then_genuine(op: bytes) -> list[bytes]:
        other = bytes(wire.encode_result(os.urandom(16), os.urandom(16), os.urandom(32)))
        truncated = result_for(op)[:-1]
        return [other, truncated, _with_prefix(result_for(op), version=wire.VERSION + 1), result_for(op)]

    gw.holder["script"] = junk_then_genuine
    op = operation("scripted")
    answer = dev.ask(op)
    assert wire.decode_result(answer)[0] == op[2:18]
    wait_until(
        lambda: metric(gw, 'ecoin_gateway_malformed_total{source="reply"}') == 3, what="three junk replies"
    )
    assert len(dev.answers[op[2:18]]) == 1


def test_an_unknown_error_code_reaches_the_device_as_failed(scripted) -> None:  # type: ignore[no-untyped-def]
    gw, _, dev = scripted
    codes = iter([99, wire.E_FAILED, 0])
    lock = threading.Lock()

    def raw_error(op: bytes) -> list[bytes]:
        with lock:
            code = next(codes)
        return [bytes([wire.VERSION, wire.T_ERROR]) + op[2:18] + bytes([code])]

    gw.holder["script"] = raw_error
    for _ in range(3):
        op = operation("scripted")
        assert wire.decode_error(dev.ask(op)) == (op[2:18], wire.E_FAILED)


def _unanswered_past_its_deadline(gw: Gateway, analyst: ScriptedAnalyst, dev: Device) -> bytes:
    """An operation the analyst does not answer in time; returns the op_id once the device was
    told TIMEOUT and the wall-clock deadline in its correlation data has passed."""
    gw.holder["script"] = lambda op: []  # type: ignore[attr-defined]
    op = operation("scripted")
    op_id = op[2:18]
    assert wire.decode_error(dev.ask(op)) == (op_id, wire.E_TIMEOUT)
    route = gw.router.correlator.open(analyst.asked[op_id].CorrelationData, op_id)
    assert route is not None
    wait_until(lambda: time.time() > route.deadline, what="the deadline in the correlation data")
    return op_id


def _flushed(gw: Gateway, dev: Device) -> None:
    """Returns once every earlier answer has reached the device (answers keep their order)."""
    gw.holder["script"] = lambda op: [result_for(op)]  # type: ignore[attr-defined]
    dev.ask(operation("scripted"))


def test_a_result_after_the_deadline_is_still_relayed_a_bounded_number_of_times(scripted) -> None:  # type: ignore[no-untyped-def]
    """The gateway was stopped, say, while the reply waited for it at the broker: the device
    gave up, but a RESULT now lets it settle the coin it holds in doubt."""
    gw, analyst, dev = scripted
    op_id = _unanswered_past_its_deadline(gw, analyst, dev)
    late = [bytes(wire.encode_result(op_id, os.urandom(16), os.urandom(32))) for _ in range(6)]
    analyst.answer(op_id, [bytes(wire.encode_error(op_id, wire.E_FAILED)), *late])
    wait_until(lambda: metric(gw, "ecoin_gateway_late_replies_total") == 3, what="the ERROR and the extras")
    _flushed(gw, dev)
    assert dev.answers[op_id][1:] == late[: awaiting.REPLIES_MAX]  # after the TIMEOUT, in order
    assert metric(gw, "ecoin_gateway_late_relayed_total") == awaiting.REPLIES_MAX


def test_a_result_after_the_grace_period_is_dropped(scripted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    gw, analyst, dev = scripted
    monkeypatch.setattr(router_mod, "LATE_GRACE_S", 0.0)
    op_id = _unanswered_past_its_deadline(gw, analyst, dev)
    analyst.answer(op_id, [bytes(wire.encode_result(op_id, os.urandom(16), os.urandom(32)))])
    wait_until(lambda: metric(gw, "ecoin_gateway_late_replies_total") == 1, what="the late RESULT")
    _flushed(gw, dev)
    assert [wire.frame_type(f)[0] for f in dev.answers[op_id]] == [wire.T_ERROR]
    assert metric(gw, "ecoin_gateway_late_relayed_total") == 0

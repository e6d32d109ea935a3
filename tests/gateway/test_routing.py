"""Routing against a real Mosquitto: operations, queries, unavailable services, timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import Device, EchoAnalyst, config, operation, query, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto


def test_operation_round_trip(gateway: Gateway, mosquitto: Mosquitto, analyst: EchoAnalyst) -> None:
    dev = Device(mosquitto.port, "dev-a").start()
    try:
        for _ in range(20):
            op = operation()
            answer = dev.ask(op)
            assert wire.frame_type(answer) == (wire.T_RESULT, op[2:18])
            assert analyst.received[op[2:18]] == 1
    finally:
        dev.stop()
    assert metric(gateway, "ecoin_gateway_forwarded_total") == 20


def test_query_live_and_unavailable(gateway: Gateway, mosquitto: Mosquitto) -> None:
    dev = Device(mosquitto.port, "dev-q").start()
    try:
        assert wire.decode_status(dev.ask(query("echo")))[1] == wire.S_LIVE
        assert wire.decode_status(dev.ask(query("nobody")))[1] == wire.S_UNAVAILABLE
    finally:
        dev.stop()


def test_unavailable_service_is_not_forwarded(
    gateway: Gateway, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    dev = Device(mosquitto.port, "dev-u").start()
    try:
        op = operation("nobody")
        assert wire.decode_error(dev.ask(op)) == (op[2:18], wire.E_UNAVAILABLE)
        assert metric(gateway, "ecoin_gateway_forwarded_total") == 0
    finally:
        dev.stop()


def test_retracted_announcement_makes_service_unavailable(
    gateway: Gateway, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    analyst.retract()
    wait_until(lambda: not gateway.directory.is_live("echo"), what="retraction seen")
    dev = Device(mosquitto.port, "dev-r").start()
    try:
        op = operation()
        assert wire.decode_error(dev.ask(op))[1] == wire.E_UNAVAILABLE
    finally:
        dev.stop()


def test_analyst_will_clears_service(gateway: Gateway, mosquitto: Mosquitto) -> None:
    other = EchoAnalyst(mosquitto.port, ("other",), name="o1").start()
    wait_until(lambda: gateway.directory.is_live("other"), what="announcement")
    other.client._sock.close()  # an unclean end: the broker publishes the will  # type: ignore[union-attr]
    other.client.loop_stop()
    wait_until(lambda: not gateway.directory.is_live("other"), what="will", timeout=30)


def test_timeout_answers_generic_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    silent = EchoAnalyst(mosquitto.port, ("mute",), name="m1")
    silent._message = lambda *a: None  # type: ignore[method-assign]  # swallows every operation
    silent.client.on_message = silent._message
    silent.start()
    gw = Gateway(config(tmp_path, mosquitto.port, op_timeout_s=0.5)).start()
    dev = Device(mosquitto.port, "dev-t").start()
    try:
        wait_until(lambda: gw.directory.synced_now and gw.directory.is_live("mute"))
        op = operation("mute")
        assert wire.decode_error(dev.ask(op)) == (op[2:18], wire.E_TIMEOUT)
        assert metric(gw, 'ecoin_gateway_errors_total{kind="timeout"}') == 1
    finally:
        dev.stop()
        gw.stop()
        silent.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_supervisor_restarts_a_dead_network_thread(gateway: Gateway, mosquitto: Mosquitto) -> None:
    loop = gateway.netloop
    serve = loop._serve

    def die_once(*args: object) -> None:
        loop._serve = serve  # type: ignore[method-assign]
        raise SystemExit("simulated death of the network thread")  # not an Exception: it ends the thread

    loop._serve = die_once  # type: ignore[method-assign]
    dev = Device(mosquitto.port, "dev-n").start()
    try:
        dev.send(query("echo"))
        wait_until(lambda: not loop.alive, what="the network thread dead")
        assert gateway.status()["ok"] is False  # /healthz says 503 meanwhile
        wait_until(lambda: loop.alive and loop.restarts == 1, timeout=20, what="restarted by a supervisor")
        op = operation()
        assert wire.frame_type(dev.ask(op)) == (wire.T_RESULT, op[2:18])
        assert gateway.status()["ok"] is True
    finally:
        dev.stop()


def test_a_query_is_answered_with_the_highest_live_price(
    gateway: Gateway, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    """Two analysts offer one service at 2 and 3 coins: the device is told 3 (whoever the
    shared subscription picks is paid in full), and the directory serves every analyst's terms."""
    cheap = EchoAnalyst(mosquitto.port, ("priced",), name="p2", price=2).start()
    dear = EchoAnalyst(mosquitto.port, ("priced",), name="p3", price=3).start()
    dev = Device(mosquitto.port, "dev-p").start()
    try:
        wait_until(lambda: len(gateway.status()["catalog"].get("priced", {}).get("analysts", {})) == 2)
        assert wire.decode_status(dev.ask(query("priced")))[1:] == (wire.S_LIVE, 3)
        assert wire.decode_status(dev.ask(query("echo")))[1:] == (wire.S_LIVE, 1)  # no price announced
        assert wire.decode_status(dev.ask(query("nobody")))[1:] == (wire.S_UNAVAILABLE, 0)
        entry = gateway.status()["catalog"]["priced"]
        assert entry["price"] == 3 and entry["analysts"]["p2"] == {
            "price": 2,
            "description": "echo",
            "version": "1",
            "schema": {},
        }
        dear.retract()
        wait_until(lambda: gateway.directory.price("priced") == 2, what="the dearer analyst gone")
        assert wire.decode_status(dev.ask(query("priced")))[1:] == (wire.S_LIVE, 2)
    finally:
        dev.stop()
        for a in (cheap, dear):
            a.retract()
            a.stop()

"""The gateway under faults (issue 18), with real processes: a kill -9 while an operation is in
flight loses no answer; a stopped-then-resumed gateway does not forward an operation whose
device gave up; after a broker restart the next operation succeeds within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import tomli_w

from ecoin.gateway import config as gwconfig
from ecoin.gateway import router
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import Device, EchoAnalyst, config, operation, query, result_for, wait_until
from ecoin.testing.servers import Mosquitto, free_port, stop


class GatewayProcess:
    """``ecoin-gateway serve`` on a plain broker, restartable, killed only by its own pid."""

    def __init__(self, tmp: Path, port: int, **over: Any) -> None:
        self.health = free_port()
        table = {
            "gateway_id": "gw1",
            "backoff_min_s": 0.1,
            "backoff_max_s": 1.0,
            "edge": {"port": port},
            "upstream": {"port": port},
            "queue": {"path": "queue.sqlite"},
            "health": {"port": self.health},
            **over,
        }
        self.config = tmp / "gateway.toml"
        self.config.write_text(tomli_w.dumps({"gateway": table}))
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, service: str = "echo") -> GatewayProcess:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "ecoin.gateway.cli", "-c", str(self.config), "serve"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        wait_until(lambda: service in self.status().get("services", {}), what="gateway up and synced")
        return self

    def status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=2) as r:  # noqa: S310
                return dict(json.loads(r.read()))
        except OSError:
            return {}

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot take SIGTERM
            stop(self.proc)


class HeldAnalyst(EchoAnalyst):
    """Takes operations and answers them only when told to."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.held: list[tuple[bytes, Any]] = []
        self.got = threading.Event()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received[bytes(msg.payload)[2:18]] += 1
            self.held.append((bytes(msg.payload), msg.properties))
        self.got.set()

    def release(self) -> list[bytes]:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        sent = []
        for frame, props in self.held:
            reply = Properties(PacketTypes.PUBLISH)
            reply.CorrelationData = props.CorrelationData
            sent.append(result_for(frame))
            self.client.publish(props.ResponseTopic, sent[-1], 1, properties=reply).wait_for_publish(5)
        return sent


@pytest.fixture
def gateway_process(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path, mosquitto.port, op_timeout_s=20.0)
    try:
        yield gw
    finally:
        gw.stop()


def test_a_reply_after_a_kill_9_reaches_the_device(
    gateway_process: GatewayProcess, mosquitto: Mosquitto
) -> None:
    analyst = HeldAnalyst(mosquitto.port)
    analyst.client.on_message = analyst._message
    analyst.start()
    dev = Device(mosquitto.port, "dev-k").start()
    try:
        gateway_process.start()
        op = operation()
        dev.send(op)
        assert analyst.got.wait(10), "the operation never reached the analyst"
        gateway_process.signal(signal.SIGKILL)  # the waiting list in memory dies with it
        (result,) = analyst.release()  # the broker keeps it for the gateway's session
        gateway_process.start()
        assert dev.wait(op[2:18], timeout=15) == result
    finally:
        dev.stop()
        analyst.stop()


def test_a_resumed_gateway_does_not_forward_a_stale_operation(tmp_path: Path, mosquitto: Mosquitto) -> None:
    analyst = EchoAnalyst(mosquitto.port).start()
    gw = GatewayProcess(tmp_path, mosquitto.port, op_timeout_s=2.0)
    dev = Device(mosquitto.port, "dev-s").start()
    try:
        gw.start()
        gw.signal(signal.SIGSTOP)
        stale = operation()
        dev.send(stale).wait_for_publish(5)
        stopped = time.monotonic()
        # Past the device's deadline, and a stop clearly longer than the router's threshold.
        wait_until(lambda: time.monotonic() - stopped > router.STALL_S + 1.0, what="a long stop", timeout=10)
        gw.signal(signal.SIGCONT)
        resumed = time.monotonic()
        assert wire.decode_error(dev.wait(stale[2:18])) == (stale[2:18], wire.E_DROPPED)
        assert analyst.received[stale[2:18]] == 0  # never forwarded: the coin is not spent
        wait_until(lambda: time.monotonic() - resumed > router.CATCHUP_S, what="the catch-up after the stop")
        fresh = operation()
        assert wire.frame_type(dev.ask(fresh)) == (wire.T_RESULT, fresh[2:18])
    finally:
        dev.stop()
        gw.stop()
        analyst.stop()


def test_a_broker_restart_is_over_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    broker = Mosquitto.plain(tmp_path / "m1", port).start()
    analyst = EchoAnalyst(port)
    analyst.client.reconnect_delay_set(0.1, 0.5)
    analyst.start()
    defaults = gwconfig.Config()
    gw = Gateway(
        config(tmp_path, port, backoff_min_s=defaults.backoff_min_s, backoff_max_s=defaults.backoff_max_s)
    ).start()
    dev = Device(port, "dev-b").start()
    dev.client.reconnect_delay_set(0.1, 0.5)
    try:
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("echo"),
            what="gateway up",
        )
        broker.stop()
        wait_until(lambda: gw.upstream.link.backoff.attempt >= 5, what="a long outage", timeout=60)
        broker = Mosquitto.plain(tmp_path / "m2", port).start()
        back = time.monotonic()
        # The device asks promptly and again until it hears LIVE, then operates.
        while True:
            probe = query("echo")
            dev.send(probe)
            try:
                if wire.decode_status(dev.wait(probe[2:18], timeout=0.5))[1] == wire.S_LIVE:
                    break
            except AssertionError:
                pass
            assert time.monotonic() - back < 5, "no LIVE within 5 s of the broker being back"
        op = operation()
        assert wire.frame_type(dev.ask(op, timeout=5)) == (wire.T_RESULT, op[2:18])
        assert time.monotonic() - back < 5
    finally:
        dev.stop()
        gw.stop()
        analyst.stop()
        broker.stop()


def test_a_query_right_after_a_start_waits_for_the_directory(tmp_path: Path, mosquitto: Mosquitto) -> None:
    analyst = EchoAnalyst(mosquitto.port).start()
    dev = Device(mosquitto.port, "dev-q").start()
    gw = Gateway(config(tmp_path, mosquitto.port)).start()
    try:
        # SUBACKed, so the query cannot beat the subscription; the directory may not be known yet
        wait_until(lambda: gw.edge.link.subscribed, what="edge subscribed")
        assert wire.decode_status(dev.ask(query("echo")))[1] == wire.S_LIVE
    finally:
        dev.stop()
        gw.stop()
        analyst.stop()

"""Fuzz: 100,000 random and mutated frames into the gateway's inputs. Most go straight into
the router and the serial decoder (fast); a slice goes through a real broker and a real pty.
Nothing may crash or raise (the handlers count unexpected exceptions: that count must stay
zero), and memory must stay flat."""

from __future__ import annotations

import gc
import os
import random
import select
import tracemalloc
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.gateway import edge, framing
from ecoin.gateway.correlation import Correlator
from ecoin.gateway.directory import Directory
from ecoin.gateway.limits import DeviceLimiter
from ecoin.gateway.metrics import Metrics
from ecoin.gateway.queue import OpQueue
from ecoin.gateway.router import Router
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import (
    Device,
    EchoAnalyst,
    PtyDevice,
    config,
    operation,
    query,
    result_for,
    wait_until,
)
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto, stop_paho

DIRECT = 90_000
BROKER = 6_000
REPLIES = 1_000
SERIAL = 3_000
DEVICES = [f"fz{i}" for i in range(300)]


def templates(rng: random.Random) -> list[bytes]:
    op_id = rng.randbytes(16)
    topup = wire.encode_topup_request(op_id, "fz1", 7, 3)
    return [
        operation(size=16),
        operation(size=rng.choice((32, 512, 4112))),
        operation("nobody"),
        query("echo"),
        query("x" * 32),
        bytes(topup),
        bytes(wire.encode_error(op_id, wire.E_FAILED)),
        bytes(wire.encode_status(op_id, wire.S_LIVE)),
        result_for(operation()),
    ]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    how = rng.randrange(9)
    if how == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif how == 1:
        del b[rng.randrange(len(b)) :]
    elif how == 2:
        b += rng.randbytes(rng.randint(1, 64))
    elif how == 3:
        i = rng.randrange(len(b))
        b[i : i + 8] = rng.randbytes(8)
    elif how == 4:
        b[0] = rng.randrange(256)
    elif how == 5:
        b[1] = rng.randrange(10)
    elif how == 6 and len(b) > 30:
        i = rng.randrange(18, len(b) - 2)
        b[i : i + 2] = rng.choice((b"\xff\xff", b"\x00\x00", b"\x01\x00", b"\x00\x10"))
    elif how == 7:
        b = bytearray(rng.randbytes(rng.randint(wire.FRAME_MAX - 10, wire.FRAME_MAX + 500)))
        b[0] = wire.VERSION
    return bytes(b)


def frames(rng: random.Random, n: int):  # type: ignore[no-untyped-def]
    pool = templates(rng)
    for i in range(n):
        if i % 500 == 0:
            pool = templates(rng)
        r = rng.random()
        if r < 0.3:
            yield rng.randbytes(rng.randint(0, 300))
        elif r < 0.4:
            yield rng.choice(pool)  # valid (and repeated: the dedupe path)
        else:
            yield mutate(rng, rng.choice(pool))


class LoopbackUpstream:
    """Answers every operation at once through the router's reply path (like an echo)."""

    def __init__(self, rng: random.Random) -> None:
        self.router: Router | None = None  # set once the router that uses it exists
        self.rng = rng
        self.sent = 0

    def send(self, service: str, frame: bytes, corr: bytes, expiry_s: int) -> bool:
        self.sent += 1
        reply = result_for(frame) if self.rng.random() < 0.8 else mutate(self.rng, result_for(frame))
        assert self.router is not None
        self.router.on_reply(corr, reply)
        return True

    def has_room(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


def test_fuzz_router_and_serial_decoder(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    metrics = Metrics()
    directory = Directory()
    directory.announce("ecoin/svc/echo/analyst/a1", b"{}")
    directory.synced()
    answers = [0]

    def collect(device: str, frame: bytes) -> bool:
        wire.frame_type(frame)  # every answer the gateway makes is itself well formed
        answers[0] += 1
        return True

    upstream = LoopbackUpstream(rng)
    router = Router(
        directory=directory,
        queue=OpQueue(tmp_path / "q.sqlite", 1 << 20, 60),
        metrics=metrics,
        limiter=DeviceLimiter(rate=1e6, burst=1e6, max_devices=1000),
        upstream=upstream,
        routes={"mqtt": collect, "serial:fz0": collect},
        correlator=Correlator(bytes(32)),
        op_timeout_s=0.5,  # operations are awaited until their deadline: memory is rate x timeout
        recent_max=5_000,
    )
    upstream.router = router
    router.start()
    tracemalloc.start()
    try:
        gen = frames(rng, DIRECT)
        decoder = framing.Decoder()
        for i, frame in enumerate(gen):
            if i == DIRECT // 3:
                gc.collect()
                base = tracemalloc.get_traced_memory()[0]
            if i % 10 == 0:  # also through the serial framing, whole, split and corrupted
                wire_bytes = framing.encode(frame) if len(frame) <= wire.FRAME_MAX else frame
                if rng.random() < 0.3:
                    wire_bytes = mutate(rng, wire_bytes) + b"\0"
                for part in (wire_bytes[:7], wire_bytes[7:]):
                    for got in decoder.feed(part):
                        router.handle("serial:fz0", "fz0", got)
            else:
                router.handle("mqtt", rng.choice(DEVICES), frame)
            if i % 50 == 0:
                topic = rng.choice(
                    (
                        "ecoin/dev/a/up",
                        "ecoin/dev//up",
                        "ecoin/dev/a b/up",
                        "x",
                        "ecoin/dev/" + "a" * 40 + "/up",
                    )
                )
                edge.device_of(topic)
                directory.announce(topic, rng.randbytes(3))
                router.on_reply(rng.choice((None, rng.randbytes(12), b"")), rng.randbytes(40))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        router.stop()
    assert metric(metrics, "ecoin_gateway_callback_errors_total") == 0
    assert upstream.sent > 1000  # valid operations did pass
    assert answers[0] > DIRECT // 2
    assert metric(metrics, 'ecoin_gateway_malformed_total{source="mqtt"}') > DIRECT // 3
    assert grown < 2 * 1024 * 1024, f"memory grew by {grown} bytes in the second two thirds"


def test_fuzz_through_real_broker_and_pty(tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst) -> None:
    rng = random.Random(7)
    tty = tmp_path / "tty0"
    pty = PtyDevice(tty)
    cfg = config(tmp_path, mosquitto.port, serial=[{"device_id": "fz-ser", "path": str(tty)}])
    gw = Gateway(cfg).start()
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=mqtt.MQTTv5)
    raw.max_inflight_messages_set(100)
    raw.connect("127.0.0.1", mosquitto.port)
    raw.loop_start()
    try:
        wait_until(
            lambda: (
                gw.edge.link.subscribed
                and gw.directory.synced_now
                and gw.directory.is_live("echo")
                and gw.serial[0].is_open
            )
        )
        infos = []
        for i, frame in enumerate(frames(rng, BROKER)):
            infos.append(raw.publish(f"ecoin/dev/{rng.choice(DEVICES)}/up", frame, qos=rng.choice((0, 1))))
            if i % 6 == 0:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = rng.randbytes(rng.choice((0, 12, 40)))
                raw.publish("ecoin/gw/gw1/reply", mutate(rng, result_for(operation())), 1, properties=props)
        for i, frame in enumerate(frames(rng, SERIAL)):
            data = framing.encode(frame) if len(frame) <= wire.FRAME_MAX else frame + b"\0"
            os.write(pty.master, mutate(rng, data) if i % 3 == 0 else data)
            if select.select([pty.master], [], [], 0)[0]:  # a device reads its answers
                os.read(pty.master, 65536)
        for info in infos:
            info.wait_for_publish(30)
        # Still fully working on both inputs, with the same connections as before.
        dev = Device(mosquitto.port, "after-fuzz").start()
        try:
            op = operation()
            # One ask (a second of the same op is a duplicate), as patient as the serial one
            # below: under emulation the gateway may still be reading the flood's backlog.
            assert wire.frame_type(dev.ask(op, timeout=60)) == (wire.T_RESULT, op[2:18])
        finally:
            dev.stop()
        op = operation()
        assert wire.frame_type(pty.ask(op, timeout=60)) == (wire.T_RESULT, op[2:18])
        assert metric(gw, "ecoin_gateway_callback_errors_total") == 0
        assert gw.edge.link.connects == 1 and gw.upstream.link.connects == 1
        assert gw.serial[0].opens == 1
        assert metric(gw, 'ecoin_gateway_malformed_total{source="mqtt"}') > BROKER // 4
        assert metric(gw, 'ecoin_gateway_malformed_total{source="serial"}') > SERIAL // 10
    finally:
        stop_paho(raw)
        gw.stop()
        pty.close()

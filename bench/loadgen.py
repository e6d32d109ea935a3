"""A device load generator: CPython devices that speak exactly what the firmware speaks.

Each device is one MQTT 3.1.1 connection to the edge broker with its own user name and
password (as provisioned), publishing OPERATION frames sealed by ``ecoin.protocol.session``
over its own coins (withdrawn from the real bank) on ``ecoin/dev/<id>/up`` and verifying
every RESULT on ``.../down`` with the session keys it kept. Nothing is faked between the
device and the bank: broker, gateway, analyst and bank are the real processes.

``offer(rate, seconds)`` is open loop: operations leave at a fixed rate whatever the
answers do (a closed loop would hide queueing); each operation's latency is send to a
verified RESULT. ``saturate`` raises the offered rate until the system stops keeping up.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ecoin.common import crypto, sockets, topics
from ecoin.common.bank_client import Withdrawal
from ecoin.protocol import session, wire

READINGS = json.dumps(
    {"sensor": "t", "unit": "C", "start": 1795000000, "interval": 1.0, "values": [20.5, 21.0, 21.5, 22.0]}
).encode()


@dataclass
class _Op:
    k_enc: bytes
    k_mac: bytes
    sent: float
    done: float = 0.0
    failed: bool = False


@dataclass
class Figures:
    offered_per_s: float
    answered_per_s: float
    sent: int
    ok: int
    failed: int
    unanswered: int
    latencies_ms: list[float] = field(repr=False)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Device:
    """One device: its connection, its coins and the operations it awaits."""

    def __init__(self, device_id: str, password: str, port: int, coins: Withdrawal, service: str) -> None:
        self.id, self.service, self.coins = device_id, service, list(coins.coins)
        self.public, self.kid = coins.public_key, coins.kid
        self.ops: dict[bytes, _Op] = {}
        self.lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        c.username_pw_set(device_id, password)
        c.on_socket_open = sockets.nodelay
        c.on_message = self._on_message
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", port, keepalive=60)
        c.subscribe(topics.device_down(device_id), qos=1)
        c.loop_start()
        self.client = c

    def send(self) -> bool:
        """Seals and publishes one operation; False when the device has no coin left."""
        with self.lock:
            if not self.coins:
                return False
            coin = self.coins.pop()
        op_id, k_enc, k_mac, frame = session.seal_operation(
            crypto, self.public, self.kid, coin, self.service, READINGS
        )
        with self.lock:
            self.ops[bytes(op_id)] = _Op(k_enc, k_mac, time.monotonic())
        self.client.publish(topics.device_up(self.id), bytes(frame), qos=1)
        return True

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            kind, op_id = wire.frame_type(msg.payload)
        except (ValueError, TypeError):
            return
        with self.lock:
            op = self.ops.get(op_id)
        if op is None or op.done:
            return
        if kind == wire.T_RESULT:
            try:
                session.open_result(crypto, msg.payload, op_id, op.k_enc, op.k_mac)
            except ValueError:
                return  # not the genuine answer: keep waiting, as the firmware does
        elif kind != wire.T_ERROR:
            return
        op.failed, op.done = kind == wire.T_ERROR, now

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# The devices' 50 network threads share one GIL here, where real devices each have a CPU:
# with CPython's 5 ms switch interval the generator's own hand-overs were counted in the
# latency it measures. The services use the same 0.5 ms (docs/SCALING.md 1.3).
GIL_SWITCH_S = 0.0005


class Fleet:
    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = list(devices)
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)

    def offer(self, rate: float, seconds: float, drain_s: float = 10.0) -> Figures:
        """Sends ``rate`` operations per second, round robin over the devices, for
        ``seconds``; then waits up to ``drain_s`` for the last answers."""
        start, n, sent = time.monotonic(), int(rate * seconds), []
        for i in range(n):
            due = start + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            device = self.devices[i % len(self.devices)]
            if device.send():
                sent.append(device)
        end_send = time.monotonic()
        deadline = end_send + drain_s
        while time.monotonic() < deadline and not self._all_done():
            time.sleep(0.01)
        return self._figures(rate, start)

    def _all_done(self) -> bool:
        return all(op.done for d in self.devices for op in list(d.ops.values()))

    def _figures(self, rate: float, start: float) -> Figures:
        ops = [op for d in self.devices for op in d.ops.values()]
        done = [op for op in ops if op.done]
        ok = [op for op in done if not op.failed]
        last = max((op.done for op in done), default=start)
        span = max(last - start, 1e-9)
        figures = Figures(
            offered_per_s=rate,
            answered_per_s=len(done) / span,
            sent=len(ops),
            ok=len(ok),
            failed=len(done) - len(ok),
            unanswered=len(ops) - len(done),
            latencies_ms=[(op.done - op.sent) * 1000 for op in ok],
        )
        for d in self.devices:
            d.ops.clear()
        return figures

    def saturate(self, start_rate: float, seconds: float, step: float = 1.5, limit: float = 5000) -> Figures:
        """Raises the offered rate by ``step`` until answers fall behind (fewer than 90 %
        answered at the offered rate, or any failure); returns the best run kept up with."""
        best: Figures | None = None
        rate = start_rate
        while rate <= limit:
            run = self.offer(rate, seconds)
            kept_up = run.failed == 0 and run.unanswered == 0 and run.answered_per_s >= 0.9 * rate
            if not kept_up:
                break
            best, rate = run, rate * step
        return best or run

    def close(self) -> None:
        for d in self.devices:
            d.close()
        sys.setswitchinterval(self._switch)


def summary(fig: Figures) -> dict[str, float]:
    lat = fig.latencies_ms
    return {
        "answered_per_s": round(fig.answered_per_s, 1),
        "p50_ms": round(statistics.median(lat), 2) if lat else float("nan"),
        "p99_ms": round(fig.percentile(99), 2),
        "failed": fig.failed,
        "unanswered": fig.unanswered,
    }

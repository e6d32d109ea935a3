"""A test-only stand-in for gateway + analyst + bank: answers devices on a real broker.

It holds the coin private key, so it does what the bank and the analyst do together:
decrypts the header with RSA-OAEP (``cryptography``), checks op_id and service tag, derives
the session keys, verifies and decrypts the readings, and seals a real RESULT with
``session.seal_result``. QUERY gets STATUS LIVE; TOPUP_REQUEST gets real coins. Every coin
it sees is recorded, so a test can check that none ever arrives twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire
from ecoin.testing.servers import wait_until

MODES = ("ok", "error", "error99", "silent", "badtag", "badtag_first", "unavailable", "hold")


@dataclass
class Seen:
    device: str
    op_id: bytes
    coin: bytes
    values: int
    start: int = 0  # the readings' timestamp (0: the device has no set clock)


@dataclass
class Responder:
    port: int
    key: rsa.RSAPrivateKey
    device_keys: dict[str, bytes] = field(default_factory=dict)
    mode: str = "ok"
    ops: list[Seen] = field(default_factory=list)
    by_coin: dict[bytes, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    queries: int = 0
    minted: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds an analysis takes (keeps operations in flight longer)

    def __post_init__(self) -> None:
        self.release = threading.Event()  # mode "hold": results wait for this
        self._held: list[tuple[str, bytes]] = []
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"responder-{os.getpid()}", protocol=paho.MQTTv311
        )
        self.client.on_connect = lambda c, *a: c.subscribe("ecoin/dev/+/up", qos=0)
        self.subscriptions = 0  # SUBACKs received: one per (re)connection once it listens
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]  # paho takes floats
        self.connected = self.client.is_connected

    def start(self) -> Responder:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_until(lambda: self.subscriptions, timeout=10, what="the responder subscribed")
        return self

    def _on_subscribe(self, *_: object) -> None:
        with self._lock:
            self.subscriptions += 1

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def flush_held(self) -> None:
        """Publishes the results held in mode "hold" (now, on whatever broker is up)."""
        for topic, frame in self.take_held():
            self.client.publish(topic, frame, qos=1)

    def take_held(self) -> list[tuple[str, bytes]]:
        """The (topic, RESULT) pairs held in mode "hold", in order, for a test to send itself."""
        with self._lock:
            held, self._held = self._held, []
        return held

    def coins_sent_twice(self) -> dict[bytes, list[bytes]]:
        return {coin: ops for coin, ops in self.by_coin.items() if len(ops) > 1}

    # Frames.

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        device = msg.topic.split("/")[2]
        down = f"ecoin/dev/{device}/down"
        try:
            kind, op_id = wire.frame_type(msg.payload)
            answer = self._answer(device, kind, op_id, bytes(msg.payload))
        except Exception as exc:  # a test helper: record, do not die in paho's thread
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        if answer is None:
            return
        if kind == wire.T_OPERATION and self.mode == "hold":
            with self._lock:
                self._held.append((down, answer))
            return
        if kind == wire.T_OPERATION and self.mode == "badtag_first":  # a forger answers first
            forged = bytearray(answer)
            forged[-1] ^= 1
            client.publish(down, bytes(forged), qos=1)
        client.publish(down, answer, qos=1)

    def answer(self, device: str, frame: bytes) -> bytes | None:
        """The answer to one frame from a device (for transports other than MQTT)."""
        kind, op_id = wire.frame_type(frame)
        return self._answer(device, kind, op_id, frame)

    def _answer(self, device: str, kind: int, op_id: bytes, frame: bytes) -> bytes | None:
        if kind == wire.T_QUERY:
            self.queries += 1
            code = wire.S_UNAVAILABLE if self.mode == "unavailable" else wire.S_LIVE
            return bytes(wire.encode_status(op_id, code))
        if kind == wire.T_OPERATION:
            return self._operation(device, op_id, frame)
        if kind == wire.T_TOPUP_REQUEST:
            return self._topup(device, frame)
        self.errors.append(f"unexpected frame type {kind} from {device}")
        return None

    def _operation(self, device: str, op_id: bytes, frame: bytes) -> bytes | None:
        _, kid, service, header, _ct, _tag = wire.decode_operation(frame)
        coin, iv, h_op, s_tag = session.split_header(self.key.decrypt(header, cr.oaep(session.HEADER_LABEL)))
        if h_op != op_id or s_tag != session.service_tag(cr, service):
            raise ValueError("header does not match the operation")
        k_enc, k_mac = session.session_keys(cr, coin, op_id)
        readings = json.loads(session.open_operation(cr, frame, k_enc, k_mac, iv))
        values = readings["values"]
        with self._lock:
            self.ops.append(Seen(device, op_id, coin, len(values), readings.get("start", 0)))
            if op_id not in self.by_coin[coin]:
                self.by_coin[coin].append(op_id)
        if self.delay:
            time.sleep(self.delay)
        if self.mode == "silent":
            return None
        if self.mode == "error":
            return bytes(wire.encode_error(op_id, wire.E_FAILED))
        if self.mode == "error99":  # a code no version defines (wire refuses to encode it)
            return wire.encode_error(op_id, wire.E_FAILED)[:-1] + b"\x63"
        result = {"service": service, "result": {"n": len(values), "mean": sum(values) / len(values)}}
        sealed = session.seal_result(cr, op_id, k_enc, k_mac, json.dumps(result).encode())
        if self.mode == "badtag":
            sealed[-1] ^= 1
        return bytes(sealed)

    def _topup(self, device: str, frame: bytes) -> bytes:
        dkey = self.device_keys[device]
        op_id, _dev, counter, count = session.check_topup_request(cr, dkey, frame)
        if counter <= self._counters.get(device, 0):
            return bytes(wire.encode_error(op_id, wire.E_FAILED))
        self._counters[device] = counter
        coins = [os.urandom(32) for _ in range(count)]
        self.minted.extend(coins)
        expires = int(time.time()) + 86400
        return bytes(session.seal_topup_response(cr, dkey, op_id, counter, expires, b"".join(coins)))

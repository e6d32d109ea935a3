"""A hostile director: stands where the gateway stands and misbehaves on purpose.

It answers the device's QUERY frames itself ("live"), then applies a per-operation plan to
what passes through: it tampers with, replays, reorders, splices, reroutes or drops
operations and results. It holds no key; it only moves and edits bytes, which is all a
real compromised gateway or broker could do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.protocol import wire
from ecoin.tools.provisioning.bundle import Broker, provision_device
from ecoin.tools.provisioning.install import install_bundle
from ecoin.tools.provisioning.targets import SimTarget

REPLY = "ecoin/gw/evil/reply"


def flip(frame: bytes, at: int) -> bytes:
    out = bytearray(frame)
    out[at] ^= 0x01
    return bytes(out)


@dataclass
class Op:
    index: int
    device: str
    frame: bytes
    op_id: bytes
    service: str
    result: bytes | None = None  # what the analyst answered


@dataclass
class HostileDirector:
    port: int
    plan: dict[int, str]  # operation index -> action; missing: honest
    bank: Any = None  # a BankClient with the gateway's certificate, to relay top-ups
    drop_topup_answers: int = 0  # answers from the bank thrown away before one is relayed
    prices: list[int] = field(default_factory=list)  # the price told to each QUERY in turn; then 1
    queries: int = 0
    topups: list[bytes] = field(default_factory=list)  # every TOPUP_REQUEST seen
    ops: list[Op] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> HostileDirector:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="evil", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe([("ecoin/dev/+/up", 1), (REPLY, 1)])
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        frame = bytes(msg.payload)
        if msg.topic == REPLY:
            self._on_reply(frame)
            return
        device = msg.topic.split("/")[2]
        kind, op_id = wire.frame_type(frame)
        if kind == wire.T_QUERY:  # whatever price the analyst asks: the director makes one up
            with self.lock:
                price = self.prices[self.queries] if self.queries < len(self.prices) else 1
                self.queries += 1
            self.log.append(f"query {op_id[:4].hex()}: told price {price}")
            self._down(device, wire.encode_status(op_id, wire.S_LIVE, price))
        elif kind == wire.T_TOPUP_REQUEST and self.bank is not None:
            self.topups.append(frame)
            answer = self.bank.topup(frame)  # the bank mints and charges; the answer may be lost
            if self.drop_topup_answers > 0:
                self.drop_topup_answers -= 1
                self.log.append(f"top-up {op_id[:4].hex()}: answer dropped")
                return
            self._down(device, answer)
        elif kind == wire.T_OPERATION:
            with self.lock:
                op = Op(len(self.ops), device, frame, op_id, wire.decode_operation(frame)[2])
                self.ops.append(op)
            self._on_operation(op)

    def _on_operation(self, op: Op) -> None:
        action = self.plan.get(op.index, "honest")
        self.log.append(f"op {op.index} {op.op_id[:4].hex()}: {action}")
        if action in ("drop", "hold"):
            return
        if action == "tamper_op":  # a bit of the ciphertext: the tag no longer matches
            self._up(op.service, flip(op.frame, len(op.frame) - 40), op.op_id)
        elif action == "tamper_tag":  # a bit of the tag itself
            self._up(op.service, flip(op.frame, len(op.frame) - 1), op.op_id)
        elif action == "splice":  # this body under the header of the held operation before it
            _, kid, svc, _hdr, ct, tag = wire.decode_operation(op.frame)
            header = wire.decode_operation(self.ops[op.index - 1].frame)[3]
            self._up(svc, bytes(wire.encode_operation(op.op_id, kid, svc, header, ct)[:-32]) + tag, op.op_id)
        elif action == "reroute":  # to an analyst of another service, the service name edited
            _, kid, _svc, header, ct, tag = wire.decode_operation(op.frame)
            frame = bytes(wire.encode_operation(op.op_id, kid, "stats", header, ct)[:-32]) + tag
            self._up("stats", frame, op.op_id)
        elif action == "honest_and_replay_first":  # and the very first operation once more
            self._up(op.service, op.frame, op.op_id)
            self._up(self.ops[0].service, self.ops[0].frame, self.ops[0].op_id + b"replay")
        else:
            self._up(op.service, op.frame, op.op_id)

    def _on_reply(self, frame: bytes) -> None:
        try:
            _kind, op_id = wire.frame_type(frame)
        except wire.InvalidFrame:
            return
        with self.lock:
            op = next((o for o in self.ops if o.op_id == op_id and o.result is None), None)
        if op is None:  # the answer to a replay: a real gateway would relay it; it must be harmless
            for o in self.ops:
                if o.op_id == op_id:
                    self._down(o.device, frame)
            return
        op.result = frame
        action = self.plan.get(op.index, "honest")
        if action == "tamper_result":
            frame = flip(frame, wire.PREFIX_LEN + 20)
        elif action == "replay_result":  # the first operation's genuine result instead
            frame = self.ops[0].result or frame
        elif action == "reorder":  # the previous operation's result first, then this one's
            self._down(op.device, self.ops[op.index - 1].result or b"")
        elif action == "forge_first":  # a forged result first, then the genuine one
            self._down(op.device, flip(frame, len(frame) - 1))
        self._down(op.device, frame)

    def _up(self, service: str, frame: bytes, correlation: bytes) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = REPLY
        props.CorrelationData = correlation
        self.client.publish(f"ecoin/svc/{service}/op", frame, qos=1, properties=props)

    def _down(self, device: str, frame: bytes) -> None:
        self.client.publish(f"ecoin/dev/{device}/down", frame, qos=1)


def provision_sim(
    owner: Any, workdir: Path, device: str, port: int, coins: int, config: dict[str, Any]
) -> Path:
    """Provisions ``device`` at the bank for ``owner`` and deploys it into a simulated flash
    directory on an anonymous test broker; returns the flash directory."""
    bundle = provision_device(
        owner,
        device,
        "average",
        coins=coins,
        out_dir=workdir / "bundles",
        broker=Broker(port=port, password="unused-on-an-anonymous-broker"),  # noqa: S106
        config=config,
    )
    flash = workdir / "flash" / device
    install_bundle(bundle, SimTarget(flash, create=True))
    return flash

"""Test parties for the gateway: an echo "analyst", MQTT devices, frame builders.

The gateway never looks inside a frame, so the echo analyst answers every operation with a
RESULT-shaped frame (right op_id, random body) and counts what it received, per op_id.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import ssl
import threading
import time
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.common import tls, topics
from ecoin.gateway import config as gwconfig
from ecoin.gateway import framing
from ecoin.protocol import wire
from ecoin.testing.broker import password, password_file
from ecoin.testing.servers import stop_paho, wait_until

__all__ = ["wait_until"]  # tests take it from here with the gateway's other helpers


def operation(service: str = "echo", op_id: bytes | None = None, size: int = 64) -> bytes:
    """An OPERATION frame with the right layout and random content (no coin needed)."""
    return bytes(
        wire.encode_operation(
            op_id or os.urandom(16), os.urandom(8), service, os.urandom(256), os.urandom(size)
        )
    )


def query(service: str, op_id: bytes | None = None) -> bytes:
    return bytes(wire.encode_query(op_id or os.urandom(16), service))


def result_for(op_frame: bytes) -> bytes:
    return bytes(wire.encode_result(op_frame[2:18], os.urandom(16), os.urandom(32)))


def config(tmp: Path, port: int, upstream_port: int | None = None, **over: Any) -> gwconfig.Config:
    """A gateway config for a plain loopback broker (edge and upstream may be the same)."""
    table: dict[str, Any] = {
        "gateway_id": "gw1",
        "op_timeout_s": 10.0,
        "backoff_min_s": 0.1,
        "backoff_max_s": 1.0,
        "edge": {"port": port},
        "upstream": {"port": upstream_port or port},
        "queue": {"path": str(tmp / "queue.sqlite")},
        "limits": {"rate_per_s": 1000.0, "burst": 1000},
        "health": {"port": 0},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            table[key] = {**table[key], **value}
        else:
            table[key] = value
    return gwconfig.from_table(table)


class EchoAnalyst:
    """Announces ``services`` (retained, cleared by its will) and echoes every operation."""

    def __init__(
        self,
        port: int,
        services: tuple[str, ...] = ("echo",),
        name: str = "echo1",
        price: int | None = None,  # None: an announcement without a price (before prices)
        login: tuple[str, str] | None = None,  # (user name, password) on the service listener
        **tls: Any,
    ):
        self.services = services
        self.name = name
        self.price = price
        self.received: Counter[bytes] = Counter()
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=login[0] if login else f"analyst-{name}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        for svc in services:
            self.client.will_set(f"ecoin/svc/{svc}/analyst/{name}", b"", qos=1, retain=True)
        if tls:
            self.client.tls_set_context(tls["context"])
        if login:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.port = port
        self.ready = threading.Event()
        self.connects = 0  # more than 1: something knocked this connection off

    def _connected(self, client: mqtt.Client, *args: Any) -> None:
        self.connects += 1
        for svc in self.services:
            client.subscribe(f"$share/ecoin-{svc}/ecoin/svc/{svc}/op", 1)
            announcement: dict[str, Any] = {
                "service": svc,
                "analyst": self.name,
                "description": "echo",
                "schema": {},
            }
            if self.price is not None:
                announcement.update(price=self.price, version="1")
            client.publish(f"ecoin/svc/{svc}/analyst/{self.name}", json.dumps(announcement), 1, retain=True)
        self.ready.set()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        frame = bytes(msg.payload)
        with self.lock:
            self.received[frame[2:18]] += 1
        asked = msg.properties
        if asked is None:  # not an operation the gateway sent: nothing to answer
            return
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = asked.CorrelationData  # type: ignore[attr-defined]  # set by the broker
        client.publish(asked.ResponseTopic, result_for(frame), 1, properties=props)  # type: ignore[attr-defined]

    def start(self, host: str = "127.0.0.1") -> EchoAnalyst:
        self.client.connect(host, self.port)
        self.client.loop_start()
        assert self.ready.wait(10)
        return self

    def retract(self) -> None:
        for svc in self.services:
            self.client.publish(f"ecoin/svc/{svc}/analyst/{self.name}", b"", 1, retain=True).wait_for_publish(
                5
            )

    def stop(self) -> None:
        stop_paho(self.client)


class Device:
    """An MQTT 3.1.1 device: publishes frames on its up topic, collects answers by op_id."""

    def __init__(
        self, port: int, device_id: str, username: str = "", password: str = "", context: Any = None
    ):
        self.device_id = device_id
        self.answers: dict[bytes, list[bytes]] = defaultdict(list)
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}", protocol=mqtt.MQTTv311
        )
        if username:
            self.client.username_pw_set(username, password)
        if context is not None:
            self.client.tls_set_context(context)
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *a: c.subscribe(f"ecoin/dev/{device_id}/down", 1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.port = port

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        frame = bytes(msg.payload)
        with self.cond:
            self.answers[frame[2:18]].append(frame)
            self.cond.notify_all()

    def start(self) -> Device:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):  # an answer sent before the SUBACK would be lost
            raise AssertionError(f"{self.device_id}: not subscribed")
        return self

    def send(self, frame: bytes, topic_device: str | None = None) -> mqtt.MQTTMessageInfo:
        return self.client.publish(f"ecoin/dev/{topic_device or self.device_id}/up", frame, 1)

    def wait(self, op_id: bytes, timeout: float = 15.0) -> bytes:
        with self.cond:
            if not self.cond.wait_for(lambda: op_id in self.answers, timeout):
                raise AssertionError(f"{self.device_id}: no answer for {op_id.hex()}")
            return self.answers[op_id][0]

    def ask(self, frame: bytes, timeout: float = 15.0) -> bytes:
        self.send(frame)
        return self.wait(frame[2:18], timeout)

    def stop(self) -> None:
        stop_paho(self.client)


# The TLS broker of the generated configuration (the ``broker`` fixture in conftest.py).


class Client:
    """A raw MQTT client that records every message it is sent, and how its connection went."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        user: str = "",
        password: str = "",
        v5: bool = False,
        client_id: str = "",
    ):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        self.client.tls_set_context(context)
        if user:
            self.client.username_pw_set(user, password)
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.refused: Any = None
        self.subacks: list[list[Any]] = []  # each SUBACK's reason codes (a refusal is one too)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.append(list(codes))
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.dropped.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.refused = rc
        self.connected.set()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, 1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, 1, retain=retain).wait_for_publish(5)

    def stop(self) -> None:
        stop_paho(self.client)


def device_tls(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca.crt"))


def service_tls(pki: Path, role: str, name: str) -> ssl.SSLContext:
    return tls.client_context(pki / role / f"{name}.crt", pki / role / f"{name}.key", pki / "ca.crt")


def gateway_side(port: int, pki: Path) -> dict[str, Any]:
    """An [edge] or [upstream] table: gw1's certificate and password on the service listener."""
    return {
        "port": port,
        "tls": True,
        "ca": str(pki / "ca.crt"),
        "cert": str(pki / "gateway" / "gw1.crt"),
        "key": str(pki / "gateway" / "gw1.key"),
        "password_file": str(password_file(pki, "gw1")),
    }


def analyst_login(pki: Path, analyst: str, service: str, instance: str = "1") -> tuple[str, str]:
    """What an analyst's connection for ``service`` logs in with on the service listener."""
    return topics.analyst_client(analyst, instance, service), password(pki, analyst)


def gateway_login(pki: Path, link: str = "up", gateway: str = "gw1") -> tuple[str, str]:
    """What the gateway's ``edge`` or ``up`` connection logs in with on the service listener."""
    return topics.gateway_client(gateway, link), password(pki, gateway)


def _firmware_link() -> ModuleType | None:
    """The firmware's own serial framing (firmware/serial_link.py), run on CPython."""
    path = Path(str(resources.files("ecoin.firmware").joinpath("serial_link.py")))
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("fw_serial_link", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PtyDevice:
    """The device end of a pty pair; the gateway opens the other end through ``link``."""

    def __init__(self, link: Path) -> None:
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(self.slave_name)  # like /dev/serial/by-id/...: a stable name
        self.decoder = framing.Decoder()
        self.inbox: dict[bytes, bytes] = {}
        fw = _firmware_link()
        self.fw = fw.SerialLink(self) if fw else None

    def write(self, data: bytes | memoryview) -> int:  # the stream the firmware link writes to
        return os.write(self.master, data)

    def send(self, frame: bytes) -> None:
        if self.fw is not None:
            self.fw.publish(None, frame)
        else:
            os.write(self.master, framing.encode(frame))

    def ask(self, frame: bytes, timeout: float = 10.0) -> bytes:
        self.send(frame)
        op_id = frame[2:18]
        deadline = time.monotonic() + timeout
        while op_id not in self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no answer on the serial line")
            if select.select([self.master], [], [], left)[0]:
                for got in self.decoder.feed(os.read(self.master, 4096)):
                    self.inbox[got[2:18]] = got
        return self.inbox[op_id]

    def close(self) -> None:
        os.close(self.master)

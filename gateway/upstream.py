"""The upstream side: operations out as MQTT 5 requests, replies and the directory in.

Each operation is published (QoS 1) to ``ecoin/svc/<service>/op`` with the response topic
``ecoin/gw/<gateway_id>/reply`` and correlation data naming the pending entry. At most
``window`` operations are unacknowledged at a time (never more than the broker's receive
maximum): paho then never holds a backlog of its own that a dead connection could lose or
re-send; anything that does not fit waits in the store-and-forward queue instead.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.common import topics
from ecoin.gateway import directory as directory_mod
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import Broker
from ecoin.gateway.directory import Directory
from ecoin.gateway.link import Link, Will
from ecoin.gateway.netloop import NetLoop

log = logging.getLogger("ecoin.gateway.upstream")

ONLINE = json.dumps({"state": "online"}).encode()
OFFLINE = json.dumps({"state": "offline"}).encode()


op_topic = topics.service_op


class RequestProperties(Properties):
    """Message expiry, response topic and correlation data, packed directly (paho's generic
    Properties costs about 20 µs per message here; only ``pack()`` is used when publishing).
    The expiry is the device's deadline: the broker discards an operation no analyst took
    by then, and an analyst can see how long the device still waits."""

    def __init__(self, response_topic: str, corr: bytes, expiry_s: int) -> None:
        topic = response_topic.encode()
        body = (
            b"\x02"
            + max(1, expiry_s).to_bytes(4, "big")
            + b"\x08"
            + len(topic).to_bytes(2, "big")
            + topic
            + b"\x09"
            + len(corr).to_bytes(2, "big")
            + corr
        )
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", _varint(len(body)) + body)

    _packed: bytes

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        return "RequestProperties"

    __repr__ = __str__


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Upstream:
    def __init__(
        self,
        broker: Broker,
        gateway_id: str,
        directory: Directory,
        *,
        window: int,
        on_reply: Callable[[bytes | None, bytes], None],
        on_ready: Callable[[], None],
        on_window: Callable[[], None],
        on_lost: Callable[[], None],
        on_error: Callable[[], None],
        on_stale: Callable[[], None] = lambda: None,
        backoff: Backoff,
        netloop: NetLoop,
    ) -> None:
        self.gateway_id = gateway_id
        self.reply_topic = topics.gateway_reply(gateway_id)
        self.status_topic = topics.gateway_status(gateway_id)
        self.directory = directory
        self.max_window = window
        self.window = window
        self.inflight = 0
        self._lock = threading.Lock()
        self._on_reply = on_reply
        self._on_ready = on_ready
        self._on_window = on_window
        self._on_lost = on_lost
        self._on_stale = on_stale
        self.link = Link(
            "upstream",
            broker,
            topics.gateway_client(gateway_id, "up"),
            netloop,
            v5=True,
            subscriptions=[
                (directory_mod.FILTER, 1),
                (self.reply_topic, 1),
                (self.status_topic, 1),  # last: its echo comes after every retained announcement
            ],
            on_message=self._message,
            on_up=self._up,
            on_down=self._down,
            on_publish=self._published,
            on_error=on_error,
            will=Will(self.status_topic, OFFLINE),
            backoff=backoff,
        )

    @property
    def ready(self) -> bool:
        return self.link.up

    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop(goodbye=self._goodbye)

    def _goodbye(self, client: mqtt.Client) -> None:
        client.publish(self.status_topic, OFFLINE, qos=0, retain=True)

    def send(self, service: str, frame: bytes, corr: bytes, expiry_s: int) -> bool:
        """Publishes one operation, to expire after ``expiry_s`` seconds, if connected and
        the window has room; False otherwise (then nothing was sent and the caller keeps the
        operation)."""
        with self._lock:
            if not self.link.up or self.inflight >= self.window:
                return False
            self.inflight += 1
        props = RequestProperties(self.reply_topic, corr, expiry_s)
        if self.link.publish(op_topic(service), frame, 1, False, props) < 0:
            with self._lock:
                self.inflight -= 1
            return False
        return True

    def has_room(self) -> bool:
        return self.link.up and self.inflight < self.window

    # Link callbacks (paho's network thread).

    def _up(self, client: mqtt.Client, props: Any) -> None:
        limit = getattr(props, "ReceiveMaximum", None) if props is not None else None
        with self._lock:
            self.inflight = 0  # a fresh client: nothing of the old connection is in flight
            self.window = min(self.max_window, int(limit)) if limit else self.max_window
        self.directory.reconnected()
        client.publish(self.status_topic, ONLINE, qos=0, retain=True)
        log.info("upstream_ready", extra={"window": self.window})
        self._on_ready()

    def _down(self) -> None:
        with self._lock:
            self.inflight = 0
        self.directory.lost()
        self._on_lost()

    def _published(self, mid: int) -> None:
        # Every QoS 1 publish on this link is an operation (status goes at QoS 0).
        with self._lock:
            self.inflight = max(0, self.inflight - 1)
        self._on_window()

    def _stale_reply(self, msg: mqtt.MQTTMessage) -> None:
        """A retained message on the reply topic answers nothing now (Mosquitto's ACLs
        cannot refuse retained publishes per topic, so any analyst could leave one): it is
        cleared and dropped. The empty message that clears it is dropped too."""
        if msg.payload:
            self.link.publish(self.reply_topic, b"", qos=0, retain=True)
            self._on_stale()

    def _message(self, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if topic == self.reply_topic:
            if msg.retain or not msg.payload:
                self._stale_reply(msg)
                return
            corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
            self._on_reply(corr, bytes(msg.payload))
        elif topic == self.status_topic:
            if msg.payload == ONLINE:
                self.directory.synced()
        else:
            self.directory.announce(topic, bytes(msg.payload))

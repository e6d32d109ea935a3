"""The edge side: devices publish frames on ``ecoin/dev/<id>/up`` and read ``.../down``.

The gateway holds a persistent session (clean session off) so that the edge broker keeps
device frames for it while it restarts; repeats this may cause are dropped by the router.

Answers that come while this link is down wait in memory and go out when it is back
(bounded in count, bytes and age): after a restart the upstream session delivers the replies
it kept, often before this link is up, and a device must not lose them to that race.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt

from ecoin.common import topics
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import Broker
from ecoin.gateway.link import Link
from ecoin.gateway.netloop import NetLoop

UP_FILTER = topics.DEVICE_UP_FILTER
device_of = topics.device_of
HELD_MAX = 1_000  # answers kept while the link is down
HELD_BYTES = 4 * 1024 * 1024
HELD_S = 30.0  # older ones are dropped: their devices no longer wait


class Edge:
    def __init__(
        self,
        broker: Broker,
        gateway_id: str,
        *,
        on_frame: Callable[[str, str, bytes], None],
        on_bad_topic: Callable[[], None],
        on_error: Callable[[], None],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
        backoff: Backoff,
        netloop: NetLoop,
    ) -> None:
        self._on_frame = on_frame
        self._on_bad_topic = on_bad_topic
        self._on_up = on_up
        self._held: deque[tuple[float, str, bytes]] = deque()
        self._held_bytes = 0
        self._lock = threading.Lock()
        self.link = Link(
            "edge",
            broker,
            topics.gateway_client(gateway_id, "edge"),
            netloop,
            v5=False,
            subscriptions=[(UP_FILTER, 1)],
            on_message=self._message,
            on_error=on_error,
            on_up=lambda client, props: self._up(),
            on_down=on_down,
            backoff=backoff,
        )

    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    def send(self, device: str, frame: bytes) -> bool:
        """Publishes an answer, or keeps it for the next connection; False if it is lost."""
        if self.link.publish(topics.device_down(device), frame, 1) >= 0:
            return True
        with self._lock:
            if len(self._held) >= HELD_MAX or self._held_bytes + len(frame) > HELD_BYTES:
                return False
            self._held.append((time.monotonic(), device, frame))
            self._held_bytes += len(frame)
        return True

    def _up(self) -> None:
        with self._lock:
            held, self._held, self._held_bytes = self._held, deque(), 0
        fresh = time.monotonic() - HELD_S
        for at, device, frame in held:
            if at >= fresh:
                self.link.publish(topics.device_down(device), frame, 1)
        self._on_up()

    def _message(self, msg: mqtt.MQTTMessage) -> None:
        device = device_of(msg.topic)
        if device is None:
            self._on_bad_topic()
            return
        self._on_frame("mqtt", device, bytes(msg.payload))

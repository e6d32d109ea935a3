"""The edge side: devices publish frames on ``ecoin/dev/<id>/up`` and read ``.../down``.

The gateway holds a persistent session (clean session off) so that the edge broker keeps
device frames for it while it restarts; repeats this may cause are dropped by the router.
"""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt

from ecoin.common import topics
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import SERVICE_CLIENT_PREFIX, Broker
from ecoin.gateway.link import Link
from ecoin.gateway.netloop import NetLoop

UP_FILTER = topics.DEVICE_UP_FILTER
device_of = topics.device_of


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
        self.link = Link(
            "edge",
            broker,
            f"{SERVICE_CLIENT_PREFIX}gw-{gateway_id}-edge",
            netloop,
            v5=False,
            subscriptions=[(UP_FILTER, 1)],
            on_message=self._message,
            on_error=on_error,
            on_up=lambda client, props: on_up(),
            on_down=on_down,
            backoff=backoff,
        )

    def start(self) -> None:
        self.link.start()

    def stop(self) -> None:
        self.link.stop()

    def send(self, device: str, frame: bytes) -> bool:
        return self.link.publish(topics.device_down(device), frame, 1) >= 0

    def _message(self, msg: mqtt.MQTTMessage) -> None:
        device = device_of(msg.topic)
        if device is None:
            self._on_bad_topic()
            return
        self._on_frame("mqtt", device, bytes(msg.payload))

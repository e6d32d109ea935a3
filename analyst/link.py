"""One MQTT 5 connection per offered service (paho-mqtt 2.x, its threaded loop).

Why one per service: a connection has exactly one last will, and each service's retained
announcement ``ecoin/svc/<service>/analyst/<id>`` must be cleared by a will when we die.

What makes paho's QoS 1 path fast and safe here (measured, see docs/ANALYSTS.md):

* ``manual_ack``: an operation is acknowledged only once its reply has been acknowledged
  by the broker, so a crash at any point leaves it unacknowledged in our persistent
  session (``clean_start=False`` and a session expiry), and the broker hands it to the
  restarted process;
* Receive Maximum (our pipeline depth) is sent in CONNECT; paho's own outgoing window
  (``max_inflight_messages``) is raised to the same order, so replies never wait in paho;
* TCP_NODELAY on the socket: replies and acknowledgements are small packets.

Acknowledgements carry the connection generation they were received on: after a reconnect
the broker re-sends what was unacknowledged (same packet id) and only that copy is acked.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ecoin.common import sockets, topics

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("ecoin.analyst.link")

OnMessage = Callable[["Link", mqtt.MQTTMessage, int], None]
OnSent = Callable[[bool], None]


def _ignore(ok: bool) -> None:
    pass


class Link:
    def __init__(
        self,
        settings: Settings,
        service: str,
        announcement: dict[str, Any],
        on_message: OnMessage,
        metrics: Metrics,
    ):
        self.service = service
        self.metrics = metrics
        self.settings = settings
        self.announce_topic = topics.announcement(service, settings.id)
        self.announcement = json.dumps(announcement, separators=(",", ":")).encode()
        self.on_message = on_message
        self.generation = 0  # bumped on every successful connect
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._stopping = False
        self._sent: dict[int, OnSent] = {}  # reply mid -> what to do when the broker has it
        self._early: dict[int, bool] = {}  # PUBACKs that beat their registration
        self._lock = threading.Lock()
        self.client = self._client()

    def _client(self) -> mqtt.Client:
        s, b = self.settings, self.settings.broker
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id(self.service),
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        c.max_inflight_messages_set(max(20, b.receive_maximum))
        c.max_queued_messages_set(0)  # unlimited: replies queue in paho during a reconnect
        c.reconnect_delay_set(max(1, round(b.reconnect_min_s)), max(1, round(b.reconnect_max_s)))
        if b.tls:
            from ecoin.common import tls

            c.tls_set_context(tls.client_context(*s.tls_paths()))
        password = s.broker_password()
        if password is not None:  # the broker's service listener: the client id is the user name
            c.username_pw_set(s.client_id(self.service), password)
        c.will_set(self.announce_topic, b"", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_open = sockets.nodelay
        return c

    def start(self) -> Link:
        b = self.settings.broker
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = b.receive_maximum
        props.SessionExpiryInterval = b.session_expiry_s
        props.MaximumPacketSize = b.max_packet
        self.client.connect_async(b.host, b.port, b.keepalive_s, clean_start=False, properties=props)
        self.client.loop_start()
        return self

    # paho callbacks (its network thread).

    def _on_connect(self, c: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker_refused", extra={"service": self.service, "reason": str(rc)})
            return
        sock = c.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.generation += 1
        log.info(
            "broker_connected",
            extra={"service": self.service, "session_present": bool(flags.session_present)},
        )
        c.subscribe(topics.shared_op(self.service), qos=1)
        self.announce()
        self.connected.set()
        self.metrics.connected.labels(self.service).set(1)

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        """A connection attempt that failed before MQTT (refused, unreachable, TLS): paho
        calls this from inside its ``except OSError``, so the error is the one being handled;
        without it a dead broker left no trace in the log (only /healthz knew)."""
        b = self.settings.broker
        error = sys.exc_info()[1]
        log.warning(
            "broker_connect_failed",
            extra={"service": self.service, "broker": f"{b.host}:{b.port}", "error": str(error or "unknown")},
        )

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        if any(code.is_failure for code in codes):
            log.error("subscribe_refused", extra={"service": self.service, "reason": str(codes[0])})
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self.metrics.connected.labels(self.service).set(0)
        if not self._stopping:
            log.warning("broker_lost", extra={"service": self.service, "reason": str(rc)})

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.on_message(self, msg, self.generation)
        except Exception:  # an exception would end paho's loop thread: log it and go on
            log.exception("intake_crashed", extra={"service": self.service})

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        ok = not rc.is_failure
        with self._lock:
            then = self._sent.pop(mid, None)
            if then is None:
                self._early[mid] = ok
        if then is not None:
            self._call(then, ok)

    def _call(self, then: OnSent, ok: bool) -> None:
        try:
            then(ok)
        except Exception:
            log.exception("reply_callback_crashed", extra={"service": self.service})

    # Used by the service's threads.

    def announce(self) -> None:
        self._publish(self.announce_topic, self.announcement, None, True, _ignore)

    def reply(self, topic: str, correlation: bytes | None, frame: bytes, then: OnSent) -> None:
        """Publishes a reply (QoS 1); ``then(ok)`` runs once the broker acknowledged it."""
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        self._publish(topic, bytes(frame), props, False, then)

    def _publish(
        self, topic: str, payload: bytes, props: Properties | None, retain: bool, then: OnSent
    ) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        with self._lock:  # never held while calling paho (its callbacks take our lock)
            early = self._early.pop(info.mid, None)
            if early is None:
                self._sent[info.mid] = then
        if early is not None:
            then(early)

    def ack(self, mid: int, generation: int) -> None:
        """Acknowledges an operation, unless it came on an earlier connection (then the
        broker re-sends it and that copy is acknowledged)."""
        if generation == self.generation:
            self.client.ack(mid, 1)

    def unsubscribe(self) -> None:
        self.client.unsubscribe(topics.shared_op(self.service))

    def unannounce(self, timeout: float = 2.0) -> None:
        """Clears our retained announcement (what the last will does when we die)."""
        if self.connected.is_set():
            cleared = threading.Event()
            self._publish(self.announce_topic, b"", None, True, lambda ok: cleared.set())
            cleared.wait(timeout)

    def stop(self) -> None:
        """Disconnects; the broker keeps our session (and what we did not acknowledge)."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

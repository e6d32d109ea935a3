"""One supervised MQTT connection.

A supervisor thread connects, hands the client to the shared network thread (netloop.py),
and when the connection drops it waits (jittered exponential backoff) and starts over; it
also restarts the network thread if that ever dies. Every attempt uses a FRESH paho client,
so nothing left unacknowledged on a dead connection is ever re-sent by paho: the gateway
decides itself what is retried (queue.py).
Idle, the threads sleep in select() and Event.wait(): no polling loop.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.common import sockets, tls
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import Broker
from ecoin.gateway.netloop import NetLoop

log = logging.getLogger("ecoin.gateway.link")

STABLE_S = 10.0  # a connection that lived this long resets the backoff
WATCH_S = 5.0  # how often the supervisor checks that the network thread is alive


class BufferedClient(mqtt.Client):
    """paho reads each packet with several small recv() calls (type byte, length bytes,
    body), and a QoS 1 exchange is mostly tiny packets. This client takes what the socket
    has in one call and serves paho from that buffer: a fraction of the system calls. The
    network thread asks ``buffered()`` (like TLS's ``pending()``) since select() cannot
    see bytes already read. (It overrides a private paho method; paho is pinned < 3.)"""

    _rbuf = memoryview(b"")

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = super()._sock_recv(65536)
            if not data:
                return data
            buf = memoryview(data)
        self._rbuf = buf[bufsize:]
        return bytes(buf[:bufsize])

    def buffered(self) -> int:
        return len(self._rbuf)


class LinkError(Exception):
    """A broker connection could not be set up (bad TLS files, refused connect)."""


@dataclass
class Will:
    topic: str
    payload: bytes
    retain: bool = True


class Link:
    def __init__(
        self,
        name: str,
        broker: Broker,
        client_id: str,
        netloop: NetLoop,
        *,
        v5: bool,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_up: Callable[[mqtt.Client, Any], None] = lambda c, p: None,
        on_down: Callable[[], None] = lambda: None,
        on_publish: Callable[[int], None] | None = None,
        on_error: Callable[[], None] = lambda: None,
        will: Will | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.netloop = netloop
        self.broker = broker
        self.client_id = client_id
        self.v5 = v5
        self.subscriptions = subscriptions
        self._on_message = on_message
        self._on_up = on_up
        self._on_down = on_down
        self._on_publish = on_publish
        self._on_error = on_error
        self.will = will
        self.backoff = backoff or Backoff()
        self.client: mqtt.Client | None = None
        self.up = False
        # True once the broker acknowledged every subscription of this connection: before
        # that, a device's frame can reach the broker while nobody is subscribed.
        self.subscribed = False
        self._unacked_subs: set[int | None] = set()
        self.connects = 0
        self._dead = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._tls: ssl.SSLContext | None = None
        if broker.tls:  # built once, now: a bad file stops the start instead of every retry
            try:
                self._tls = (
                    tls.client_context(broker.cert, broker.key, broker.ca)
                    if broker.cert
                    else tls.server_auth_context(broker.ca)
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise LinkError(f"{name}: TLS files: {exc}") from exc
        self._login = self._read_login()

    def _read_login(self) -> tuple[str, str | None] | None:
        """(user name, password): with a password file the user name is the client id, as
        the generated broker's service listener binds the id to the user name."""
        b = self.broker
        if not b.password_file:
            return (b.username, b.password or None) if b.username else None
        try:
            password = Path(b.password_file).read_text().strip()
        except OSError as exc:  # now, not on every retry
            raise LinkError(f"{self.name}: password file: {exc}") from exc
        return b.username or self.client_id, password

    # Life cycle.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name=f"link-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, goodbye: Callable[[mqtt.Client], None] | None = None) -> None:
        self._stopping.set()
        client = self.client
        if client is not None:
            if goodbye and self.up:
                try:
                    goodbye(client)
                except Exception:  # noqa: S110 - best effort on the way out
                    pass
            client.disconnect()
            self.netloop.wake()
        if self._thread:
            self._thread.join(10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, props: Any = None
    ) -> int:
        """Hands a message to the current connection; returns its mid, or -1 if there is no
        connection (the message is then not sent, now or later)."""
        client = self.client
        if client is None or not self.up:
            return -1
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        self.netloop.wake()  # a no-op inside the network thread
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else -1

    # The supervisor.

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._run_once()
            except Exception as exc:  # one bad attempt must not end the supervisor
                log.warning("link_error", extra={"link": self.name, "error": repr(exc)})
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= STABLE_S:
                self.backoff.reset()
            delay = self.backoff.next()
            log.info("link_retry", extra={"link": self.name, "in_s": round(delay, 2)})
            self._stopping.wait(delay)

    def _run_once(self) -> None:
        dead = self._dead = threading.Event()  # this connection's own: late words cannot reach the next
        client = self._make_client()
        try:
            client.connect(self.broker.host, self.broker.port, self.broker.keepalive, **self._connect_args())
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("link_connect_failed", extra={"link": self.name, "error": str(exc)})
            return
        self.client = client
        connects = self.connects
        self.netloop.add(client, dead.set)
        try:
            while not dead.wait(WATCH_S) and not self._stopping.is_set():
                self.netloop.ensure_running()
        finally:
            self.up = False
            was_up = self.connects > connects  # this connection got as far as on_connect
            if client.socket() is not None:  # stopping: say goodbye, the network thread closes it
                client.disconnect()
                self.netloop.wake()
                dead.wait(5)
            self.client = None
            if was_up:
                self._on_down()

    def _connect_args(self) -> dict[str, Any]:
        if not self.v5:
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # replies survive a short network break
        return {"clean_start": False, "properties": props}

    def _make_client(self) -> mqtt.Client:
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,
            reconnect_on_failure=False,
        )
        # 0 = no limit in paho: the gateway keeps its own window (upstream.py), and with a
        # limit paho scans every unacknowledged message on every PUBACK.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._login is not None:
            client.username_pw_set(*self._login)
        if self.will:
            client.will_set(self.will.topic, self.will.payload, qos=1, retain=self.will.retain)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_subscribe = self._subscribed
        client.on_socket_open = sockets.nodelay
        if self._on_publish:
            client.on_publish = self._published
        return client

    # paho callbacks (its network thread). None may raise: that would kill the loop.

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("link_refused", extra={"link": self.name, "reason": str(rc)})
            if client is self.client:
                self._dead.set()
            return
        try:
            self.subscribed = False
            self._unacked_subs = {client.subscribe(topic, qos)[1] for topic, qos in self.subscriptions}
            self.connects += 1
            self.backoff.reset()
            self.up = True
            self._on_up(client, props)
            log.info("link_up", extra={"link": self.name, "host": self.broker.host, "port": self.broker.port})
        except Exception:
            log.exception("link_on_up_failed", extra={"link": self.name})
            self._on_error()

    def _subscribed(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if client is self.client:
            self._unacked_subs.discard(mid)
            self.subscribed = not self._unacked_subs

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if client is not self.client:
            return  # a late word from an earlier connection
        self.up = self.subscribed = False
        if not self._stopping.is_set():
            log.warning("link_down", extra={"link": self.name, "reason": str(rc)})
        self._dead.set()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(msg)
        except Exception:
            log.exception("message_handler_failed", extra={"link": self.name})
            self._on_error()

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        try:
            assert self._on_publish is not None
            self._on_publish(mid)
        except Exception:
            log.exception("publish_handler_failed", extra={"link": self.name})
            self._on_error()

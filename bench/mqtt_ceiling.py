"""The ceiling of the analyst's MQTT path alone: paho 2.x QoS 1 with manual acks over TLS,
configured like the analyst, through the bench's broker, and which resource limits it.

Why the old figure collapsed on some runs (149 msgs/s against 4,500-8,000): it published a
burst of 20,000 messages as fast as the broker took them. When the subscriber falls behind
by more than the broker's ``max_queued_messages`` (10,000 in the gateway's configuration),
Mosquitto drops the excess silently, the bench waited its full 120 s for messages that never
came, and the count divided by that wait looked like a slow client. Whether the subscriber
falls that far behind depends on how much CPU it gets, so the collapse came and went with the
machine's other load. Now the publisher keeps at most ``WINDOW`` messages ahead of the
subscriber (well under the broker's queue), a burst without the window is measured separately
to count what the broker drops, and the CPU each party used over the run names the limit.

Figures:
- analyst_paho_qos1_msgs_per_s: delivered per second, publisher windowed;
- analyst_paho_qos1_cpu_<party>: share of one core used over that run by the subscriber's
  paho thread, the publisher (its paho thread and the publishing thread) and the broker;
- analyst_paho_qos1_limit: the party near a full core (``subscriber``, ``publisher``,
  ``broker``), or ``cpu_wait`` if none is: everyone waits for the machine's cores (the
  load average says how busy they are);
- analyst_paho_qos1_burst_dropped: of a 20,000 burst without the window, how many the broker
  dropped (0 when the subscriber keeps up).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.common import tls, topics
from ecoin.testing.broker import password

from . import cputime

MSGS = 20_000
WINDOW = 2_000
QUIET_S = 2.0  # a burst is over when nothing arrived for this long
FULL_CORE = 0.8
TOPIC = "ecoin/svc/average/op"


class _Pair:
    """A subscriber configured like the analyst's link and a publisher like the gateway."""

    def __init__(self, port: int, pki: Path) -> None:
        self.got = 0
        self.last = time.monotonic()
        self.cond = threading.Condition()
        self.sub = self._client(port, pki, "alice", "analyst", True)  # as alice's "average" link
        self.sub.on_message = self._on_message
        subscribed = threading.Event()
        self.sub.on_subscribe = lambda *_: subscribed.set()
        self.sub.subscribe(f"$share/ecoin-average/{TOPIC}", qos=1)
        self.sub.loop_start()
        self.pub = self._client(port, pki, "gw1", "gateway", False)  # as gw1's upstream link
        self.pub.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the paho subscriber could not subscribe")

    @staticmethod
    def _client(port: int, pki: Path, name: str, role: str, manual: bool) -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, manual_ack=manual
        )
        c.tls_set_context(
            tls.client_context(pki / role / f"{name}.crt", pki / role / f"{name}.key", pki / "ca.crt")
        )
        user = topics.analyst_client(name, "1", "average") if manual else topics.gateway_client(name, "up")
        c.username_pw_set(user, password(pki, name))  # the generated broker's service login
        c.max_inflight_messages_set(256)
        c.max_queued_messages_set(0)
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 256
        c.connect("127.0.0.1", port, properties=props)
        sock = c.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def _on_message(self, c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        c.ack(m.mid, m.qos)
        with self.cond:
            self.got += 1
            self.last = time.monotonic()
            self.cond.notify_all()

    def tids(self) -> dict[str, int]:
        def tid(c: mqtt.Client) -> int:
            thread = c._thread  # paho's network thread: no public handle to it
            assert thread is not None and thread.native_id is not None
            return thread.native_id

        return {"subscriber": tid(self.sub), "publisher": tid(self.pub)}

    def send(self, n: int, window: int | None) -> None:
        payload = bytes(700)
        sent = 0
        while sent < n:
            if window is not None:
                with self.cond:
                    self.cond.wait_for(self._room(sent, window), 60)
            self.pub.publish(TOPIC, payload, qos=1)
            sent += 1

    def _room(self, sent: int, window: int) -> Callable[[], bool]:
        return lambda: sent - self.got < window

    def wait(self, count: int) -> None:
        """Until ``count`` arrived, or nothing arrived for QUIET_S."""
        with self.cond:
            while self.got < count and time.monotonic() - self.last < QUIET_S:
                self.cond.wait(0.2)

    def close(self) -> None:
        for c in (self.sub, self.pub):
            c.disconnect()
            c.loop_stop()


def measure(port: int, pki: Path, broker_pid: int) -> dict[str, float | int | str]:
    pair = _Pair(port, pki)
    try:
        me, tids = os.getpid(), pair.tids()
        sender = threading.get_native_id()
        parties = {
            "subscriber": lambda: cputime.process(me, tids["subscriber"]),
            "publisher": lambda: cputime.process(me, tids["publisher"]) + cputime.process(me, sender),
            "broker": lambda: cputime.process(broker_pid),
        }
        before = {k: f() for k, f in parties.items()}
        started = time.monotonic()
        pair.send(MSGS, WINDOW)
        pair.wait(MSGS)
        elapsed = time.monotonic() - started
        shares = {k: (f() - before[k]) / elapsed for k, f in parties.items()}
        rate = pair.got / elapsed
        top = max(shares, key=lambda k: shares[k])
        out: dict[str, float | int | str] = {
            "analyst_paho_qos1_msgs_per_s": round(rate, 1),
            "analyst_paho_qos1_limit": top if shares[top] >= FULL_CORE else "cpu_wait",
            "analyst_paho_qos1_loadavg": round(os.getloadavg()[0], 2),
        }
        out.update({f"analyst_paho_qos1_cpu_{k}": round(v, 2) for k, v in shares.items()})
        base = pair.got
        pair.send(MSGS, None)
        pair.wait(base + MSGS)
        out["analyst_paho_qos1_burst_dropped"] = base + MSGS - pair.got
    finally:
        pair.close()
    return out

"""The analyst's MQTT pattern in three clients, each run as a process of its own so that its
CPU time is its own (bench/bench_mqtt_clients.py runs them side by side).

    python -m bench.mqtt_subjects KIND PORT PKI SERVICE

KIND is ``paho5`` (paho 2.x on MQTT 5, configured as analyst/link.py configures it),
``paho311`` (the same on MQTT 3.1.1: no properties to parse or pack) or ``gmqtt`` (asyncio,
MQTT 5). Each logs in as alice's instance-1 connection of SERVICE (TLS, certificate and
password), takes the shared operation subscription at QoS 1 with a persistent session, and
for each operation publishes a QoS 1 reply of RESULT size to its response topic with its
correlation data (on 3.1.1, which has neither, to the gateway's reply topic), acknowledging
the operation only once the broker has the reply, as the analyst does. The reply is
published from the client's own loop; ``paho5_handoff`` and ``gmqtt_handoff`` hand each
operation to a thread of ours first and reply from there (paho) or back on the loop (gmqtt),
as the analyst's redeemer and workers do.

It prints ``ready`` once subscribed and disconnects when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ecoin.common import crypto, sockets, tls, topics
from ecoin.protocol import session
from ecoin.testing.analyst import READINGS
from ecoin.testing.broker import password

KINDS = ("paho5", "gmqtt", "paho311", "paho5_handoff", "gmqtt_handoff")
REPLY_TOPIC = "ecoin/gw/gw1/reply"  # where a 3.1.1 subject answers (no response topic there)
RECEIVE_MAXIMUM = 256  # analyst/settings.py's defaults
SESSION_EXPIRY_S = 3600
MAX_PACKET = 65536
KEEPALIVE_S = 30
SUBSCRIBE_S = 10.0


def operation_frame(public: tuple[int, int]) -> bytes:
    """A real v2 OPERATION: one coin, the demo's readings, the header sealed to ``public``."""
    kid = session.key_id(crypto, public[0])
    frame = session.seal_operation(crypto, public, kid, crypto.random(32), "average", READINGS)[3]
    return bytes(frame)


def result_frame() -> bytes:
    """A real v2 RESULT of what ``average`` answers for those readings."""
    result = json.dumps({"result": 21.625, "paid": 1}).encode()
    return bytes(session.seal_result(crypto, crypto.random(16), crypto.random(32), crypto.random(32), result))


def _login(pki: Path, service: str) -> tuple[str, str, Any]:
    """Client id (= user name), password and TLS context of alice's connection for ``service``."""
    ctx = tls.client_context(pki / "analyst" / "alice.crt", pki / "analyst" / "alice.key", pki / "ca.crt")
    return topics.analyst_client("alice", "1", service), password(pki, "alice"), ctx


def run_paho(port: int, pki: Path, service: str, v5: bool, handoff: bool) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    frame, (cid, secret, ctx) = result_frame(), _login(pki, service)
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
    )
    c.tls_set_context(ctx)
    c.username_pw_set(cid, secret)
    c.max_inflight_messages_set(RECEIVE_MAXIMUM)
    c.max_queued_messages_set(0)
    c.on_socket_open = sockets.nodelay
    lock = threading.Lock()  # as analyst/link.py: never held while calling paho
    pending: dict[int, int] = {}  # reply mid -> operation mid
    early: set[int] = set()  # PUBACKs that beat their registration (a reply from another thread)

    def reply(msg: mqtt.MQTTMessage) -> None:
        topic, props = REPLY_TOPIC, None
        if v5:
            topic = msg.properties.ResponseTopic  # type: ignore[union-attr]
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = msg.properties.CorrelationData  # type: ignore[union-attr]
        mid = c.publish(topic, frame, qos=1, properties=props).mid
        with lock:
            now = mid in early
            early.discard(mid)
            if not now:
                pending[mid] = msg.mid
        if now:
            c.ack(msg.mid, 1)

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with lock:
            op = pending.pop(mid, None)
            if op is None:
                early.add(mid)
        if op is not None:
            c.ack(op, 1)

    handed: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()

    def replier() -> None:  # as the analyst: the reply leaves from a thread of ours, not paho's
        while True:
            reply(handed.get())

    if handoff:
        threading.Thread(target=replier, daemon=True).start()
    subscribed = threading.Event()
    c.on_message = (lambda _c, _u, msg: handed.put(msg)) if handoff else (lambda _c, _u, msg: reply(msg))
    c.on_publish = on_publish
    c.on_subscribe = lambda *_: subscribed.set()

    def on_connect(*_: Any) -> None:
        c.subscribe(topics.shared_op(service), qos=1)

    c.on_connect = on_connect
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum, props.SessionExpiryInterval = RECEIVE_MAXIMUM, SESSION_EXPIRY_S
        props.MaximumPacketSize = MAX_PACKET
        c.connect("127.0.0.1", port, KEEPALIVE_S, clean_start=False, properties=props)
    else:
        c.connect("127.0.0.1", port, KEEPALIVE_S)
    c.loop_start()
    if not subscribed.wait(SUBSCRIBE_S):
        raise SystemExit(f"{cid}: not subscribed after {SUBSCRIBE_S}s")
    print("ready", flush=True)
    sys.stdin.read()
    c.disconnect()
    c.loop_stop()


async def run_gmqtt(port: int, pki: Path, service: str, handoff: bool) -> None:
    import gmqtt

    reply, (cid, secret, ctx) = result_frame(), _login(pki, service)
    loop = asyncio.get_running_loop()

    class Acked(gmqtt.Client):
        """gmqtt has no PUBACK callback (nor returns a mid from publish): this hooks the
        private place where it forgets an acknowledged message."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.acked: dict[int, asyncio.Future[None]] = {}
            self.window = asyncio.Semaphore(1)  # sized at connect

        async def publish_acked(self, topic: str, payload: bytes, **props: Any) -> None:
            async with self.window:
                mid, package = self._connection.publish(gmqtt.Message(topic, payload, qos=1, **props))
                self._persistent_storage.push_message(mid, package)
                self.acked[mid] = done = loop.create_future()
                await done

        def size_window(self) -> None:
            """gmqtt does not queue what exceeds the broker's Receive Maximum (paho does): it
            raises OverflowError once its packet ids run out, so we hold replies back."""
            self.window = asyncio.Semaphore(self._package_handler.id_generator._max - 2)

        def _remove_message_from_queue(self, mid: int) -> None:
            super()._remove_message_from_queue(mid)
            done = self.acked.pop(mid, None)
            if done is not None:
                done.set_result(None)

    async def on_message(client: Acked, _t: str, _payload: bytes, _qos: int, props: dict[str, Any]) -> int:
        # Not optimistic: gmqtt sends our PUBACK when this returns, with this reason code.
        if handoff:  # to a thread and back, as an asyncio analyst would reach its bank and workers
            await loop.run_in_executor(pool, int)
        await client.publish_acked(
            props["response_topic"][0], reply, correlation_data=props["correlation_data"][0]
        )
        return 0

    pool = ThreadPoolExecutor(1)
    c = Acked(
        cid,
        clean_session=False,
        optimistic_acknowledgement=False,
        receive_maximum=RECEIVE_MAXIMUM,
        session_expiry_interval=SESSION_EXPIRY_S,
        maximum_packet_size=MAX_PACKET,
    )
    subscribed = asyncio.Event()
    c.on_message = on_message
    c.on_subscribe = lambda *_: subscribed.set()
    c.set_auth_credentials(cid, secret)
    await c.connect("127.0.0.1", port, ssl=ctx, keepalive=KEEPALIVE_S)
    c.size_window()
    c.subscribe(topics.shared_op(service), qos=1)
    try:
        await asyncio.wait_for(subscribed.wait(), SUBSCRIBE_S)
    except TimeoutError:
        raise SystemExit(f"{cid}: not subscribed after {SUBSCRIBE_S}s") from None
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    await c.disconnect()


def main(argv: list[str]) -> None:
    kind, port, pki, service = argv[0], int(argv[1]), Path(argv[2]), argv[3]
    client, _, handoff = kind.partition("_")
    if kind not in KINDS:
        raise SystemExit(f"unknown client {kind!r}: one of {', '.join(KINDS)}")
    if client == "gmqtt":
        asyncio.run(run_gmqtt(port, pki, service, bool(handoff)))
    else:
        run_paho(port, pki, service, client == "paho5", bool(handoff))


if __name__ == "__main__":
    main(sys.argv[1:])

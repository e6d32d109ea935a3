"""The generated Mosquitto configuration, run by a real Mosquitto with real clients: TLS on
both listeners, one password per device, and ACLs so that one device can neither read
another's results nor publish as another, and analysts stay on service topics."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ecoin.common import tls
from ecoin.gateway import brokerconf
from ecoin.gateway import config as gwconfig
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.servers import Mosquitto, free_port, wait_for_port
from tests.gateway.helpers import Device, EchoAnalyst, operation, query, wait_until

DEVICES = ["dev-a", "dev-b"]


class Client:
    """A raw MQTT client that records every message it is sent."""

    def __init__(
        self, port: int, context: ssl.SSLContext, user: str = "", password: str = "", v5: bool = False
    ):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=proto)
        self.client.tls_set_context(context)
        if user:
            self.client.username_pw_set(user, password)
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.refused: Any = None
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.refused = rc
        self.connected.set()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, 1)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, 1).wait_for_publish(5)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[tuple[brokerconf.BrokerConf, dict[str, str], Mosquitto]]:
    conf = gwconfig.BrokerConf(
        ca=str(pki / "ca.crt"),
        cert=str(pki / "broker" / "broker.crt"),
        key=str(pki / "broker" / "broker.key"),
        bind="127.0.0.1",
        device_port=free_port(),
        service_port=free_port(),
        devices=DEVICES,
        analysts={"alice": ["echo"]},
        gateways=["gw1"],
    )
    paths = brokerconf.generate(conf, tmp_path / "broker-conf")
    creds = brokerconf.load_credentials(paths["credentials"])
    assert paths["credentials"].stat().st_mode & 0o077 == 0
    mosq = Mosquitto(tmp_path / "mosq", paths["conf"].read_text(), conf.device_port).start()
    wait_for_port(conf.service_port)  # its second listener may open later (slow on arm64 under QEMU)
    try:
        yield conf, creds, mosq
    finally:
        mosq.stop()


def _device_tls(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    return ctx


def _service_tls(pki: Path, role: str, name: str) -> ssl.SSLContext:
    return tls.client_context(pki / role / f"{name}.crt", pki / role / f"{name}.key", pki / "ca.crt")


def test_regeneration_keeps_passwords(tmp_path: Path) -> None:
    conf = gwconfig.BrokerConf(devices=["d1"])
    first = brokerconf.load_credentials(brokerconf.generate(conf, tmp_path)["credentials"])
    conf2 = gwconfig.BrokerConf(devices=["d1", "d2"])
    second = brokerconf.load_credentials(brokerconf.generate(conf2, tmp_path)["credentials"])
    assert second["d1"] == first["d1"] and set(second) == {"d1", "d2"}
    assert (tmp_path / "passwords").read_text().count("$7$") == 2


def test_devices_are_confined_to_their_own_topics(broker, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    gw_cfg = gwconfig.from_table(
        {
            "gateway_id": "gw1",
            "backoff_min_s": 0.1,
            "backoff_max_s": 1.0,
            "edge": _gw_broker(conf.service_port, pki),
            "upstream": _gw_broker(conf.service_port, pki),
            "queue": {"path": str(tmp_path / "q.sqlite")},
            "health": {"port": 0},
        }
    )
    alice = EchoAnalyst(
        conf.service_port, ("echo",), name="alice", context=_service_tls(pki, "analyst", "alice")
    )
    alice.start()
    gw = Gateway(gw_cfg).start()
    ctx = _device_tls(pki)
    dev_a = Device(conf.device_port, "dev-a", "dev-a", creds["dev-a"], context=ctx).start()
    dev_b = Device(conf.device_port, "dev-b", "dev-b", creds["dev-b"], context=ctx).start()
    # dev-a tries to listen to dev-b's answers and to everybody's frames.
    spy = Client(conf.device_port, ctx, "dev-a", creds["dev-a"])
    try:
        wait_until(lambda: gw.edge.link.up and gw.directory.is_live("echo"), what="gateway up")
        assert spy.connected.wait(5) and spy.refused is None
        for topic in ("ecoin/dev/dev-b/down", "ecoin/dev/+/down", "ecoin/dev/+/up", "ecoin/#"):
            spy.subscribe(topic)
        # The legitimate path works through the TLS listeners and the ACLs.
        op_b = operation()
        assert wire.frame_type(dev_b.ask(op_b)) == (wire.T_RESULT, op_b[2:18])
        op_a = operation()
        assert wire.frame_type(dev_a.ask(op_a)) == (wire.T_RESULT, op_a[2:18])
        # dev-a publishes as dev-b: the broker drops it, so dev-b gets no answer for it.
        forged = query("echo")
        dev_a.send(forged, topic_device="dev-b")
        dev_a.client.publish("ecoin/dev/dev-b/down", operation(), 1).wait_for_publish(5)
        probe = query("echo")  # a later frame of dev-b's own, to know the forged one had its chance
        assert wire.frame_type(dev_b.ask(probe))[0] == wire.T_STATUS
        assert forged[2:18] not in dev_b.answers
        assert all(wire.frame_type(a[0])[0] != wire.T_OPERATION for a in dev_b.answers.values())
        # The spy saw only what belongs to dev-a: its own answers at most.
        assert all(topic == "ecoin/dev/dev-a/down" for topic, _ in spy.got), spy.got
        assert gw.metrics.frames_in["query"]._value.get() == 1
    finally:
        spy.stop()
        dev_a.stop()
        dev_b.stop()
        gw.stop()
        alice.stop()


def test_bad_credentials_are_refused(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    ctx = _device_tls(pki)
    for user, password in (("dev-a", creds["dev-b"]), ("nobody", "x"), ("", "")):
        c = Client(conf.device_port, ctx, user, password)
        try:
            assert c.connected.wait(5)
            assert c.refused is not None, user
        finally:
            c.stop()


def test_analysts_stay_on_service_topics(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    ctx = _device_tls(pki)
    alice = Client(conf.service_port, _service_tls(pki, "analyst", "alice"), v5=True)
    dev = Client(conf.device_port, ctx, "dev-a", creds["dev-a"])
    gw = Client(conf.service_port, _service_tls(pki, "gateway", "gw1"), v5=True)
    try:
        for c in (alice, dev, gw):
            assert c.connected.wait(5) and c.refused is None
        for topic in ("ecoin/dev/+/up", "ecoin/dev/dev-a/down", "$share/ecoin-echo/ecoin/svc/echo/op"):
            alice.subscribe(topic)
        dev.subscribe("ecoin/dev/dev-a/down")
        gw.subscribe("ecoin/svc/+/analyst/+")
        time.sleep(0.5)  # let the subscriptions settle (a denied one has no SUBACK to wait for)
        dev.publish("ecoin/dev/dev-a/up", b"device frame")
        alice.publish("ecoin/dev/dev-a/down", b"forged result")  # must not reach the device
        alice.publish("ecoin/svc/echo/analyst/bob", b"{}")  # must not pose as bob
        alice.publish("ecoin/svc/echo/analyst/alice", b"{}")  # its own announcement is fine
        gw.publish("ecoin/svc/echo/op", b"an operation")
        wait_until(lambda: ("ecoin/svc/echo/op", b"an operation") in alice.got, what="operation to alice")
        wait_until(lambda: any(t.endswith("/alice") for t, _ in gw.got), what="announcement")
        assert [t for t, _ in alice.got] == ["ecoin/svc/echo/op"]
        assert dev.got == []
        assert [t for t, _ in gw.got] == ["ecoin/svc/echo/analyst/alice"]
    finally:
        for c in (alice, dev, gw):
            c.stop()


def test_devices_cannot_use_the_service_listener(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    try:
        c = Client(conf.service_port, _device_tls(pki), "dev-a", creds["dev-a"])
    except (ssl.SSLError, OSError):
        return  # refused in the handshake: no client certificate
    try:
        c.connected.wait(3)
        assert c.refused is not None or not c.connected.is_set()
    finally:
        c.stop()


def _gw_broker(port: int, pki: Path) -> dict[str, Any]:
    return {
        "port": port,
        "tls": True,
        "ca": str(pki / "ca.crt"),
        "cert": str(pki / "gateway" / "gw1.crt"),
        "key": str(pki / "gateway" / "gw1.key"),
    }


@pytest.mark.parametrize(
    "broker, message",
    [
        ({"analysts": {"alice": []}}, "list the services of alice"),
        ({"device_tls": False, "bind": "0.0.0.0"}, "loopback bind only"),
    ],
)
def test_broker_settings_that_would_open_the_broker_are_refused(broker, message):
    from ecoin.common.config import ConfigError
    from ecoin.gateway.config import from_table

    with pytest.raises(ConfigError, match=message):
        from_table({"broker": broker})

"""The generated Mosquitto configuration, run by a real Mosquitto with real clients: TLS on
both listeners, one password per device, and ACLs so that one device can neither read
another's results nor publish as another, and analysts stay on service topics."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from ecoin.gateway import brokerconf
from ecoin.gateway import config as gwconfig
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import (
    Client,
    Device,
    EchoAnalyst,
    analyst_login,
    device_tls,
    gateway_login,
    gateway_side,
    operation,
    query,
    service_tls,
    wait_until,
)
from ecoin.testing.metrics import metric


def test_regeneration_keeps_passwords(tmp_path: Path) -> None:
    conf = gwconfig.BrokerConf(devices=["d1"], gateways=["gw1"], analysts={"alice": ["echo"]})
    creds = brokerconf.generate(conf, tmp_path)["credentials"]
    first, first_services = brokerconf.load_credentials(creds), brokerconf.load_credentials(creds, "services")
    conf2 = gwconfig.BrokerConf(
        devices=["d1", "d2"], gateways=["gw1"], analysts={"alice": ["echo"], "bob": ["other"]}
    )
    paths = brokerconf.generate(conf2, tmp_path)
    second, services = brokerconf.load_credentials(creds), brokerconf.load_credentials(creds, "services")
    assert second["d1"] == first["d1"] and set(second) == {"d1", "d2"}
    assert (tmp_path / "passwords").read_text().count("$7$") == 2
    assert services == {**first_services, "bob": services["bob"]} and set(services) == {"gw1", "alice", "bob"}
    for party, password in services.items():  # one file per party, to copy to its host
        secret = paths["secrets"] / f"{party}.password"
        assert secret.read_text().strip() == password and secret.stat().st_mode & 0o077 == 0
    users = [line.split(":")[0] for line in paths["service_passwords"].read_text().splitlines()]
    assert users == [
        "ecoin-gw-gw1-edge",
        "ecoin-gw-gw1-up",
        "ecoin-analyst-alice-1-echo",
        "ecoin-analyst-bob-1-other",
    ]
    brokerconf.generate(conf, tmp_path)  # bob is gone: so is his password
    assert not (paths["secrets"] / "bob.password").exists()


def test_every_instance_and_service_of_an_analyst_has_its_own_user() -> None:
    conf = gwconfig.BrokerConf(analysts={"alice": ["a", "b"]}, instances={"alice": ["1", "2"]})
    assert list(brokerconf.service_users(conf)) == [
        "ecoin-analyst-alice-1-a",
        "ecoin-analyst-alice-1-b",
        "ecoin-analyst-alice-2-a",
        "ecoin-analyst-alice-2-b",
    ]
    acl = brokerconf.service_acl(conf)
    block = acl.split("user ecoin-analyst-alice-2-b\n")[1].split("\n\n")[0]
    assert block.splitlines() == [
        "topic read ecoin/svc/b/op",
        "topic write ecoin/svc/b/analyst/alice",
        "topic write ecoin/gw/+/reply",
    ]


def test_devices_are_confined_to_their_own_topics(broker, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    gw_cfg = gwconfig.from_table(
        {
            "gateway_id": "gw1",
            "backoff_min_s": 0.1,
            "backoff_max_s": 1.0,
            "edge": gateway_side(conf.service_port, pki),
            "upstream": gateway_side(conf.service_port, pki),
            "queue": {"path": str(tmp_path / "q.sqlite")},
            "health": {"port": 0},
        }
    )
    alice = EchoAnalyst(
        conf.service_port,
        ("echo",),
        name="alice",
        context=service_tls(pki, "analyst", "alice"),
        login=analyst_login(pki, "alice", "echo"),
    )
    alice.start()
    gw = Gateway(gw_cfg).start()
    ctx = device_tls(pki)
    dev_a = Device(conf.device_port, "dev-a", "dev-a", creds["dev-a"], context=ctx).start()
    dev_b = Device(conf.device_port, "dev-b", "dev-b", creds["dev-b"], context=ctx).start()
    # dev-c tries to listen to dev-b's answers and to everybody's frames.
    spy = Client(conf.device_port, ctx, "dev-c", creds["dev-c"])
    try:
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("echo"),
            what="gateway up",
        )
        assert spy.connected.wait(5) and spy.refused is None
        for topic in ("ecoin/dev/dev-b/down", "ecoin/dev/+/down", "ecoin/dev/+/up", "ecoin/#"):
            spy.subscribe(topic)
        wait_until(lambda: len(spy.subacks) == 4, what="the spy's subscriptions answered")
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
        # The spy saw only what belongs to dev-c: its own answers at most.
        assert all(topic == "ecoin/dev/dev-c/down" for topic, _ in spy.got), spy.got
        assert metric(gw, 'ecoin_gateway_ops_in_total{kind="query"}') == 1
    finally:
        spy.stop()
        dev_a.stop()
        dev_b.stop()
        gw.stop()
        alice.stop()


def test_bad_credentials_are_refused(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    ctx = device_tls(pki)
    for user, password in (("dev-a", creds["dev-b"]), ("nobody", "x"), ("", "")):
        c = Client(conf.device_port, ctx, user, password)
        try:
            assert c.connected.wait(5)
            assert c.refused is not None, user
        finally:
            c.stop()


def test_analysts_stay_on_service_topics(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    ctx = device_tls(pki)
    alice = Client(
        conf.service_port, service_tls(pki, "analyst", "alice"), *analyst_login(pki, "alice", "echo"), v5=True
    )
    dev = Client(conf.device_port, ctx, "dev-a", creds["dev-a"])
    gw = Client(conf.service_port, service_tls(pki, "gateway", "gw1"), *gateway_login(pki), v5=True)
    try:
        for c in (alice, dev, gw):
            assert c.connected.wait(5) and c.refused is None
        for topic in ("ecoin/dev/+/up", "ecoin/dev/dev-a/down", "$share/ecoin-echo/ecoin/svc/echo/op"):
            alice.subscribe(topic)
        dev.subscribe("ecoin/dev/dev-a/down")
        gw.subscribe("ecoin/svc/+/analyst/+")
        # every SUBACK came (a denied subscription's too), so what follows meets them all
        wait_until(lambda: [len(c.subacks) for c in (alice, dev, gw)] == [3, 1, 1], what="subscriptions")
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
        c = Client(conf.service_port, device_tls(pki), "dev-a", creds["dev-a"])
    except (ssl.SSLError, OSError):
        return  # refused in the handshake: no client certificate
    try:
        c.connected.wait(3)
        assert c.refused is not None or not c.connected.is_set()
    finally:
        c.stop()


@pytest.mark.parametrize(
    "broker, message",
    [
        ({"analysts": {"alice": []}}, "list the services of alice"),
        ({"analysts": {"alice": ["a"]}, "instances": {"bob": ["1"]}}, "bob is not in broker.analysts"),
        ({"analysts": {"alice": ["a"]}, "instances": {"alice": ["a b"]}}, "broker.instances.alice"),
        ({"analysts": {"alice": ["a"]}, "instances": {"alice": []}}, "a list of instance ids"),
        ({"device_tls": False, "bind": "0.0.0.0"}, "loopback bind only"),
        # Each of these became broker users before: one per character, or a name with a space.
        ({"analysts": {"alice": "average"}}, "broker.analysts.alice: expected an array, got str"),
        ({"analysts": {"bad name": ["a"]}}, "broker.analysts: analyst 'bad name' is not 1 to"),
        ({"analysts": {"alice": ["Bad!"]}}, "broker.analysts.alice: service 'Bad!' is not 1 to"),
        ({"devices": [1, 2]}, re.escape("broker.devices[0]: expected str, got int")),
        ({"devices": ["d 1"]}, "broker.devices: device id 'd 1' is not 1 to"),
        ({"gateways": ["gw/1"]}, "broker.gateways: gateway id 'gw/1' is not 1 to"),
    ],
)
def test_broker_settings_that_would_open_the_broker_are_refused(broker, message):
    from ecoin.common.config import ConfigError
    from ecoin.gateway.config import from_table

    with pytest.raises(ConfigError, match=message):
        from_table({"broker": broker})

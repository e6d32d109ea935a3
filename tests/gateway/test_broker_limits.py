"""Limits of the generated Mosquitto configuration (issue 13), with the real Mosquitto: client
ids bound to user names on both listeners, the packet size cap, AEAD-only TLS 1.2, stale
retained replies."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ecoin.common import topics
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
    service_tls,
    wait_until,
)
from ecoin.testing.metrics import metric
from ecoin.testing.servers import free_port, stop


def _table(conf: gwconfig.BrokerConf, pki: Path, tmp_path: Path, health: int = 0) -> dict[str, Any]:
    return {
        "gateway_id": "gw1",
        "backoff_min_s": 0.1,
        "backoff_max_s": 1.0,
        "edge": gateway_side(conf.service_port, pki),
        "upstream": gateway_side(conf.service_port, pki),
        "queue": {"path": str(tmp_path / "q.sqlite")},
        "health": {"port": health},
    }


@pytest.fixture
def routed(broker, pki: Path, tmp_path: Path) -> Iterator[tuple[Any, Gateway]]:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    alice = EchoAnalyst(
        conf.service_port,
        ("echo",),
        name="alice",
        context=service_tls(pki, "analyst", "alice"),
        login=analyst_login(pki, "alice", "echo"),
    )
    alice.start()
    gw = Gateway(gwconfig.from_table(_table(conf, pki, tmp_path))).start()
    try:
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("echo"),
            what="gateway up",
        )
        gw.alice = alice  # type: ignore[attr-defined]  # the analyst behind it, for its counters
        yield broker, gw
    finally:
        gw.stop()
        alice.stop()


def _round_trips(conf: gwconfig.BrokerConf, pki: Path, creds: dict[str, str], n: int = 5) -> None:
    """Operations through both of the gateway's links and alice, after an attempt."""
    dev = Device(conf.device_port, "dev-b", "dev-b", creds["dev-b"], context=device_tls(pki)).start()
    try:
        for _ in range(n):
            op = operation()
            assert wire.frame_type(dev.ask(op)) == (wire.T_RESULT, op[2:18])
    finally:
        dev.stop()


def _impostors(conf: gwconfig.BrokerConf, pki: Path, client_id: str) -> list[Client]:
    """Certificate holders asking for ``client_id``: bob and the owner olive with their
    certificate only (as the service listener took them before), and bob with his own login."""
    return [
        Client(conf.service_port, service_tls(pki, "analyst", "bob"), client_id=client_id),
        Client(conf.service_port, service_tls(pki, "owner", "olive"), client_id=client_id),
        Client(
            conf.service_port,
            service_tls(pki, "analyst", "bob"),
            *analyst_login(pki, "bob", "other"),
            client_id=client_id,
        ),
    ]


def _refused_or_own_id(impostors: list[Client]) -> None:
    for c in impostors[:2]:
        assert c.refused is not None, "a certificate alone was let in"
    assert impostors[2].refused is None  # bob logged in, under his own id


def test_an_analyst_cannot_take_the_gateways_client_ids(routed, pki: Path) -> None:  # type: ignore[no-untyped-def]
    (conf, creds, _), gw = routed
    edge, up = gw.edge.link.connects, gw.upstream.link.connects
    impostors = [
        c for link in (gw.edge.link, gw.upstream.link) for c in _impostors(conf, pki, link.client_id)
    ]
    try:
        assert all(c.connected.wait(5) for c in impostors)
        _round_trips(conf, pki, creds)
        assert (gw.edge.link.connects, gw.upstream.link.connects) == (edge, up), "the gateway was knocked off"
        assert gw.edge.link.subscribed and gw.upstream.link.up
        _refused_or_own_id(impostors[:3])
        _refused_or_own_id(impostors[3:])
    finally:
        for c in impostors:
            c.stop()


def test_an_analyst_cannot_take_another_analysts_client_id(routed, pki: Path) -> None:  # type: ignore[no-untyped-def]
    (conf, creds, _), gw = routed
    alice = gw.alice
    connects = alice.connects
    impostors = _impostors(conf, pki, topics.analyst_client("alice", "1", "echo"))
    try:
        assert all(c.connected.wait(5) for c in impostors)
        _round_trips(conf, pki, creds)
        assert alice.connects == connects, "alice was knocked off"
        _refused_or_own_id(impostors)
    finally:
        for c in impostors:
            c.stop()


def test_a_restarted_gateway_gets_both_sessions_back(routed, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The ids bound to the logins are the ids of before: the broker keeps what came for each
    link while the gateway was away (a device's operation, a reply) and hands it over."""
    (conf, creds, _), gw = routed
    gw.stop()
    dev = Device(conf.device_port, "dev-b", "dev-b", creds["dev-b"], context=device_tls(pki)).start()
    replier = Client(
        conf.service_port, service_tls(pki, "analyst", "bob"), *analyst_login(pki, "bob", "other"), v5=True
    )
    again = None
    try:
        op = operation()
        dev.send(op)  # into the edge session of the stopped gateway
        assert replier.connected.wait(5) and replier.refused is None
        replier.publish("ecoin/gw/gw1/reply", bytes(operation()[:64]))  # into its upstream session
        again = Gateway(gwconfig.from_table(_table(conf, pki, tmp_path))).start()
        assert wire.frame_type(dev.wait(op[2:18])) == (wire.T_RESULT, op[2:18])
        wait_until(lambda: metric(again, "ecoin_gateway_late_replies_total") == 1, what="the kept reply")
    finally:
        if again is not None:
            again.stop()
        replier.stop()
        dev.stop()


def test_a_device_cannot_take_the_gateways_client_id(routed, pki: Path) -> None:  # type: ignore[no-untyped-def]
    (conf, creds, _), gw = routed
    edge, up = gw.edge.link.connects, gw.upstream.link.connects
    impostors = [
        Client(conf.device_port, device_tls(pki), "dev-a", creds["dev-a"], client_id=link.client_id)
        for link in (gw.edge.link, gw.upstream.link)
    ]
    try:
        for c in impostors:
            assert c.connected.wait(5)
        _round_trips(conf, pki, creds)
        assert (gw.edge.link.connects, gw.upstream.link.connects) == (edge, up)
        assert gw.edge.link.subscribed and gw.upstream.link.up
    finally:
        for c in impostors:
            c.stop()


def test_device_ids_may_not_look_like_service_client_ids() -> None:
    from ecoin.common.config import ConfigError

    with pytest.raises(ConfigError, match="client ids"):
        gwconfig.from_table({"broker": {"devices": ["ecoin-gw-gw1-edge"]}})
    with pytest.raises(ConfigError, match="loopback bind only"):
        gwconfig.from_table({"broker": {"device_tls": False, "bind": "127.evil.example"}})


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:  # noqa: S310
            return dict(json.loads(r.read()))
    except OSError:
        return {}


def test_a_1mb_publish_is_refused_by_the_broker(broker, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf, creds, _ = broker
    health = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps({"gateway": _table(conf, pki, tmp_path, health)}))
    log = open(tmp_path / "gateway.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecoin.gateway.cli", "serve", "--config", str(path)], stdout=log, stderr=log
    )
    log.close()
    try:
        wait_until(lambda: _health(health).get("edge") is True, what="gateway up")
        before = _peak_rss_kib(proc.pid)
        for _ in range(3):
            big = Client(conf.device_port, device_tls(pki), "dev-a", creds["dev-a"])
            assert big.connected.wait(5) and big.refused is None
            big.client.publish("ecoin/dev/dev-a/up", bytes(operation()[:18]) + bytes(1 << 20), 1)
            assert big.dropped.wait(5), "the broker kept a 1 MB publish"
            big.stop()
        # A valid frame of the largest size still passes (answered UNAVAILABLE: no analyst).
        dev = Device(conf.device_port, "dev-b", "dev-b", creds["dev-b"], context=device_tls(pki)).start()
        try:
            op = bytes(wire.encode_operation(bytes(16), bytes(8), "x" * 32, bytes(384), bytes(4112)))
            assert wire.decode_error(dev.ask(op)) == (bytes(16), wire.E_UNAVAILABLE)
        finally:
            dev.stop()
        assert _peak_rss_kib(proc.pid) - before < 512, "the gateway's memory grew"
        assert _health(health)["edge"] is True
    finally:
        stop(proc)


def _handshake(port: int, pki: Path, ciphers: str) -> None:
    ctx = service_tls(pki, "analyst", "alice")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


def test_tls12_offers_only_aead_suites(broker, pki: Path) -> None:  # type: ignore[no-untyped-def]
    conf, _, _ = broker
    for port in (conf.device_port, conf.service_port):
        _handshake(port, pki, "ECDHE+AESGCM")
        for cbc in ("ECDHE+AES+SHA1", "ECDHE+AES+SHA256:ECDHE+AES+SHA384:!AESGCM"):
            with pytest.raises(ssl.SSLError):
                _handshake(port, pki, cbc)
    assert brokerconf.TLS12_CIPHERS in brokerconf.mosquitto_conf(conf, Path("/x"))


def test_a_retained_reply_is_cleared_and_never_relayed(broker, pki: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf, _, _ = broker
    alice = Client(
        conf.service_port, service_tls(pki, "analyst", "alice"), *analyst_login(pki, "alice", "echo"), v5=True
    )
    assert alice.connected.wait(5)
    alice.publish("ecoin/gw/gw1/reply", result_like := bytes(operation()[:64]), retain=True)
    alice.stop()
    gw = Gateway(gwconfig.from_table(_table(conf, pki, tmp_path))).start()
    try:
        wait_until(
            lambda: metric(gw, 'ecoin_gateway_malformed_total{source="reply"}') == 1,
            what="the stale reply dropped",
        )
        assert metric(gw, "ecoin_gateway_late_replies_total") == 0
    finally:
        gw.stop()
    # Only the gateway's own login reads its reply topic, and it would replace the running
    # gateway's connection: the retained state is looked at once the gateway has stopped.
    probe = Client(conf.service_port, service_tls(pki, "gateway", "gw1"), *gateway_login(pki), v5=True)
    try:
        assert probe.connected.wait(5)
        probe.subscribe("ecoin/gw/gw1/reply")
        probe.subscribe("ecoin/gw/gw1/status")  # retained: arrives after any retained reply
        wait_until(lambda: any(t.endswith("/status") for t, _ in probe.got), what="status")
        assert ("ecoin/gw/gw1/reply", result_like) not in probe.got
    finally:
        probe.stop()

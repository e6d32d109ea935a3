"""Gateway fixtures: a started gateway on the shared plain broker, with an echo analyst; a
TLS broker run from the generated configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.gateway import brokerconf
from ecoin.gateway import config as gwconfig
from ecoin.gateway.service import Gateway
from ecoin.testing.gateway import EchoAnalyst, config, wait_until
from ecoin.testing.servers import Mosquitto, free_port, wait_for_port


@pytest.fixture
def analyst(mosquitto: Mosquitto) -> Iterator[EchoAnalyst]:
    echo = EchoAnalyst(mosquitto.port).start()
    try:
        yield echo
    finally:
        echo.stop()


@pytest.fixture
def gateway(tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst) -> Iterator[Gateway]:
    gw = Gateway(config(tmp_path, mosquitto.port)).start()
    try:
        wait_until(lambda: gw.edge.link.up and gw.directory.is_live("echo"), what="gateway up")
        yield gw
    finally:
        gw.stop()


BROKER_DEVICES = ["dev-a", "dev-b", "dev-c"]


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[tuple[gwconfig.BrokerConf, dict[str, str], Mosquitto]]:
    """A real Mosquitto run with exactly the files ``broker-config`` writes: (its BrokerConf,
    the device passwords, the broker). Analyst alice offers "echo"; the gateway is gw1."""
    conf = gwconfig.BrokerConf(
        ca=str(pki / "ca.crt"),
        cert=str(pki / "broker" / "broker.crt"),
        key=str(pki / "broker" / "broker.key"),
        bind="127.0.0.1",
        device_port=free_port(),
        service_port=free_port(),
        devices=BROKER_DEVICES,
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

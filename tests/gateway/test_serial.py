"""Serial devices on pseudo-terminal pairs: operations complete, a port that vanishes and
returns is picked up again. The device side frames with the firmware's own serial_link.py,
so the two implementations of PROTOCOL 7.2 are checked against each other."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from ecoin.gateway import framing
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import EchoAnalyst, PtyDevice, config, operation, query, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto


@pytest.fixture
def serial_gateway(tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst):  # type: ignore[no-untyped-def]
    links = [tmp_path / "ttyA", tmp_path / "ttyB"]
    devices = [PtyDevice(links[0]), PtyDevice(links[1])]
    ports = [{"device_id": "ser-a", "path": str(links[0])}, {"device_id": "ser-b", "path": str(links[1])}]
    gw = Gateway(config(tmp_path, mosquitto.port, serial=ports)).start()
    try:
        wait_until(
            lambda: (
                all(s.is_open for s in gw.serial) and gw.directory.synced_now and gw.directory.is_live("echo")
            )
        )
        yield gw, devices, links
    finally:
        gw.stop()
        for d in devices:
            try:
                d.close()
            except OSError:
                pass


def test_serial_operations_on_two_ports(serial_gateway, analyst: EchoAnalyst) -> None:  # type: ignore[no-untyped-def]
    gw, devices, _ = serial_gateway
    for dev in devices:
        for _ in range(10):
            op = operation(size=1024)
            answer = dev.ask(op)
            assert wire.frame_type(answer) == (wire.T_RESULT, op[2:18])
            assert analyst.received[op[2:18]] == 1
        assert wire.decode_status(dev.ask(query("echo")))[1] == wire.S_LIVE


def test_corrupt_serial_frames_are_dropped_and_counted(serial_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, devices, _ = serial_gateway
    dev = devices[0]
    # A fixed op_id with no zero byte: a random one made byte 5 0x40 one time in 256, and the
    # flip then cut the frame in two (three drops counted, not two; seen once under QEMU).
    good = framing.encode(query("echo", op_id=bytes(range(1, 17))))
    bad = bytearray(good)
    bad[5] ^= 0x40  # one flipped bit: the CRC catches it
    # and an overlong chunk, written in pieces: a pty takes only what its buffer holds
    data = memoryview(bytes(bad) + b"\x01" * 6000 + b"\0")
    while data:
        data = data[os.write(dev.master, data[:512]) :]
        time.sleep(0.001)
    assert wire.decode_status(dev.ask(query("echo")))[1] == wire.S_LIVE
    wait_until(
        lambda: metric(gw, 'ecoin_gateway_malformed_total{source="serial"}') == 2, what="two drops counted"
    )


def test_port_that_vanishes_and_returns_recovers(serial_gateway, caplog) -> None:  # type: ignore[no-untyped-def]
    gw, devices, links = serial_gateway
    caplog.set_level(logging.DEBUG, logger="ecoin.gateway.serial")

    def failures() -> list[int]:
        records = caplog.records
        return [
            r.levelno
            for r in records
            if r.msg == "serial_unavailable" and getattr(r, "device", "") == "ser-a"
        ]

    def failed_opens() -> int:
        return len(failures())

    link = gw.serial[0]
    assert wire.frame_type(devices[0].ask(operation()))[0] == wire.T_RESULT
    devices[0].close()  # unplugged: the pty is gone, the by-id link dangles
    links[0].unlink()
    wait_until(lambda: not link.is_open, what="port seen gone")
    wait_until(lambda: failed_opens() >= 2, what="two failed re-opens")  # it keeps trying
    assert failures()[:2] == [logging.WARNING, logging.DEBUG]  # said once, not every backoff
    devices[0] = PtyDevice(links[0])  # plugged back in, under the same stable name
    wait_until(lambda: link.is_open and link.opens == 2, what="port re-opened")
    for _ in range(5):
        op = operation()
        assert wire.frame_type(devices[0].ask(op)) == (wire.T_RESULT, op[2:18])
    # The other port never noticed.
    assert gw.serial[1].opens == 1
    assert wire.frame_type(devices[1].ask(operation()))[0] == wire.T_RESULT

"""The firmware's unit tests run under the real MicroPython unix port, on the .mpy modules
as they are deployed (tests/firmware/mp_unit.py); plus the checks that need both runtimes:
frames the device builds, opened on CPython, and serial chunks exchanged with the gateway's
framing module."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from ecoin.common import crypto as cr
from ecoin.gateway import framing
from ecoin.protocol import session, wire
from ecoin.tools.provisioning.deploy import install_firmware

from .conftest import micropython

HERE = Path(__file__).resolve().parent
EXPECTED = {"coinstore": 15, "serial": 6, "mqtt": 11, "collector": 6, "session": 1}


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fw")
    keep = [(HERE / "mp_unit.py").read_text()]  # what it reaches into
    install_firmware(path, "sim", mpy=True, keep=keep)
    # the protocol modules whole, for the groups that need the service side (named alike)
    install_firmware(path / "full", "sim", mpy=True, keep=keep, service_side=True)
    return path


def run_group(firmware: Path, group: str, workdir: Path, *extra: str, service_side: bool = False) -> str:
    """Runs a group of mp_unit.py on the firmware as deployed (its protocol modules without
    the service side), or with service_side on the whole protocol modules."""
    path = str(firmware / "full" if service_side else firmware)
    proc = subprocess.run(
        [micropython(), "-X", "heapsize=1M", str(HERE / "mp_unit.py"), group, str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MICROPYPATH": path},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "FAIL" not in out, out
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m and (int(m.group(1)), int(m.group(2))) == (EXPECTED[group], 0), out
    return out


@pytest.mark.parametrize("board", ["sim", "esp32", "pico_w"])
def test_boards_import_without_touching_hardware(tmp_path: Path, board: str) -> None:
    """Every board module imports (and compiles) on the unix port, which has no network,
    dht or esp32 module: hardware objects are only created when first used."""
    install_firmware(tmp_path, board, mpy=True)
    names = ["setup", "read_sensor", "watchdog", "led", "uart", "now"]
    if board != "sim":  # optional on the kind sim board (the faithful one has them)
        names += [
            "connect_network",
            "clock",
            "set_time",
            "reset",
            "maintenance",
            "running",
            "wifi_board",
            "random",
        ]
    code = (
        "import board; board.setup({'sensor_pin': 4}); "
        f"print([callable(getattr(board, n)) for n in {names!r}])"
    )
    proc = subprocess.run(
        [micropython(), "-X", "heapsize=64K", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MICROPYPATH": str(tmp_path)},
    )
    assert proc.stdout.strip() == str([True] * len(names)), proc.stdout + proc.stderr


@pytest.mark.parametrize("group", ["coinstore", "mqtt", "collector"])
def test_firmware_units_under_micropython(firmware: Path, tmp_path: Path, group: str, coin_key) -> None:
    kid, (n, _e) = coin_key[1]
    (tmp_path / "key.json").write_text(json.dumps({"kid": kid.hex(), "n": format(n, "x")}))  # sealing
    run_group(firmware, group, tmp_path)


def test_serial_framing_matches_the_gateway(firmware: Path, tmp_path: Path) -> None:
    frames = [b"\x00", os.urandom(700), b"\x11" * 254, b"\x22" * 508 + b"\x00", b"\x00" * 300]
    data = b"".join(framing.encode(f) for f in frames[:2])
    data += b"\x05garbage\x00"  # one bad chunk the device must drop and count
    data += b"".join(framing.encode(f) for f in frames[2:])
    (tmp_path / "gateway.bin").write_bytes(data)
    (tmp_path / "gateway.json").write_text(json.dumps([f.hex() for f in frames]))
    run_group(firmware, "serial", tmp_path)
    chunks = (tmp_path / "serial.bin").read_bytes().split(b"\x00")
    assert chunks[-1] == b""
    for chunk in chunks[:-1]:  # what the device writes, the gateway reads, byte for byte
        frame = framing.decode(chunk)
        assert framing.encode(frame) == chunk + b"\x00"
    assert len(chunks) - 1 == 7


def test_session_round_trip_between_device_and_cpython(firmware: Path, tmp_path: Path, coin_key) -> None:
    key, (kid, (n, _e)) = coin_key
    coin, op_id = os.urandom(32), os.urandom(16)
    readings = json.dumps({"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [1.5] * 150})
    k_enc, k_mac = session.session_keys(cr, coin, op_id)
    plain = b'{"service": "average", "result": 1.5}'
    result = session.seal_result(cr, op_id, k_enc, k_mac, plain)
    vectors = tmp_path / "v.json"
    vectors.write_text(
        json.dumps(
            {
                "n": format(n, "x"),
                "kid": kid.hex(),
                "coin": coin.hex(),
                "op_id": op_id.hex(),
                "readings": readings,
                "result": bytes(result).hex(),
                "plain": plain.decode(),
            }
        )
    )
    # the device's sealing checked against the service side's recipe (seal_operation)
    run_group(firmware, "session", tmp_path, str(vectors), service_side=True)
    frame = bytes.fromhex((tmp_path / "operation.hex").read_text())
    got_op, got_kid, service, header, _ct, _tag = wire.decode_operation(frame)
    h_coin, iv, h_op, s_tag = session.split_header(key.decrypt(header, cr.oaep(session.HEADER_LABEL)))
    assert (got_op, got_kid, service, h_coin, h_op) == (op_id, kid, "average", coin, op_id)
    assert s_tag == session.service_tag(cr, "average")
    assert session.open_operation(cr, frame, k_enc, k_mac, iv) == readings.encode()
    frame_hex, plain_hex = (tmp_path / "collector.hex").read_text().split()  # sealed in place
    frame = bytes.fromhex(frame_hex)
    header = wire.decode_operation(frame)[3]
    iv = session.split_header(key.decrypt(header, cr.oaep(session.HEADER_LABEL)))[1]
    readings = session.open_operation(cr, frame, k_enc, k_mac, iv)
    assert readings == bytes.fromhex(plain_hex) and len(json.loads(readings)["values"]) == 40

"""The simulator: deployment, the ecoin-sim command, the CPython compatibility runtime and the
serial transport (the gateway's framing over the sim board's TCP stand-in for a UART)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from ecoin.gateway import framing
from ecoin.sim import SimDevice
from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto, free_port
from ecoin.tools.provisioning.deploy import DeployError, deploy_device

from .conftest import FAST, MakeDevice

SIM = [sys.executable, "-m", "ecoin.sim.cli"]


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIM, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands():
    out = sim("--help")
    assert out.returncode == 0
    for command in ("deploy", "run", "status", "claim"):
        assert command in out.stdout


def test_deploy_refuses_a_flash_that_holds_coins(tmp_path: Path, coin_key):
    args = (tmp_path / "d", "dev1", {"service": "average"}, [os.urandom(32)], os.urandom(32), coin_key[1])
    deploy_device(*args)
    with pytest.raises(DeployError, match="already holds a coin store"):
        deploy_device(*args)
    with pytest.raises(DeployError, match="32-byte coins"):
        deploy_device(tmp_path / "e", "dev1", {"service": "average"}, b"short", os.urandom(32), coin_key[1])


@pytest.mark.slow
def test_cli_deploys_runs_a_fleet_and_reports(
    tmp_path: Path, broker: Mosquitto, responder: Responder, coin_key
):
    kid, (n, e) = coin_key[1]
    (tmp_path / "coin.json").write_text(json.dumps({"kid": kid.hex(), "n": format(n, "x"), "e": e}))
    (tmp_path / "cfg.json").write_text(json.dumps({**FAST, "max_ops": 3}))
    for name in ("dev-a", "dev-b"):
        (tmp_path / f"{name}.coins").write_bytes(os.urandom(32 * 10))
        (tmp_path / f"{name}.key").write_bytes(os.urandom(32))
        out = sim(
            "deploy", str(tmp_path / "fleet" / name), "--device-id", name, "--service", "average",
            "--coins", str(tmp_path / f"{name}.coins"), "--device-key", str(tmp_path / f"{name}.key"),
            "--bank-key", str(tmp_path / "coin.json"), "--config", str(tmp_path / "cfg.json"),
            "--broker", f"127.0.0.1:{broker.port}", "--set", "seed=7",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"deployed {name}" in out.stdout and "10 coins" in out.stdout
    again = sim(
        "deploy", str(tmp_path / "fleet" / "dev-a"), "--device-id", "dev-a", "--service", "average",
        "--coins", str(tmp_path / "dev-a.coins"), "--device-key", str(tmp_path / "dev-a.key"),
        "--bank-key", str(tmp_path / "coin.json"),
    )  # fmt: skip
    assert again.returncode == 2 and "already holds a coin store" in again.stderr
    assert "Traceback" not in again.stderr

    run = sim("run", str(tmp_path / "fleet"), "--devices", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("dev-a", "dev-b"):
        assert f"[{name}] collector done: ops=3 results=3" in run.stdout, run.stdout
    assert len(responder.ops) == 6 and responder.coins_sent_twice() == {}

    status = sim("status", str(tmp_path / "fleet"))
    assert "dev-a: 7 coins left of 10, 0 in doubt" in status.stdout
    claim = sim("claim", str(tmp_path / "fleet" / "dev-b"))
    assert json.loads(claim.stdout) == {"device_id": "dev-b", "coins": []}


def test_cpython_runtime_runs_the_same_firmware(
    tmp_path: Path, broker: Mosquitto, responder: Responder, coin_key
):
    """Where there is no micropython binary (arm64), the same firmware runs on CPython."""
    cfg = {**FAST, "broker_port": broker.port, "max_ops": 3}
    flash = deploy_device(tmp_path / "d", "dev1", cfg, [os.urandom(32) for _ in range(5)], os.urandom(32),
                          coin_key[1], mpy=False)  # fmt: skip
    assert not list(flash.glob("*.mpy"))
    dev = SimDevice(flash, runtime="cpython").start()
    assert dev.wait(60) == 0
    out = dev.output()
    assert "running the firmware on CPython" in out
    assert "ops=3 results=3 doubts=0 left=2" in out, out


def test_serial_transport_through_the_gateways_framing(tmp_path: Path, make_device: MakeDevice, coin_key):
    """The device speaks COBS+CRC frames on its "UART" (a TCP port on the sim board); this
    side reads and writes them with ecoin.gateway.framing through pyserial, as a gateway would."""
    port = free_port()
    dev = make_device(
        0,
        transport="serial",
        serial_port=f"tcp:{port}",
        serial_tx=17,
        serial_rx=16,
        max_ops=3,
        query_timeout=1.0,
    )
    dev.start()
    assert dev.wait_for("via serial tcp:", timeout=20), dev.output()
    answerer = Responder(0, coin_key[0])
    line = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.1)
    decoder = framing.Decoder()
    deadline = time.monotonic() + 60
    try:
        while dev.running and time.monotonic() < deadline:
            try:
                data = line.read(4096)
            except serial.SerialException:  # the device finished and closed its end
                break
            for frame in decoder.feed(data):
                answer = answerer.answer("dev1", frame)
                if answer:
                    line.write(framing.encode(answer))
    finally:
        line.close()
    assert dev.wait(10) == 0
    out = dev.output()
    assert "ops=3 results=3 doubts=0" in out, out
    assert len(answerer.ops) == 3 and decoder.dropped == 0


def _device_processes(flash: Path) -> list[int]:
    """Pids of the processes running in ``flash`` (a device's cwd is its flash directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == flash.resolve():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


@pytest.mark.slow
def test_sigterm_stops_the_devices_of_a_run(
    tmp_path: Path, broker: Mosquitto, responder: Responder, coin_key
):
    """systemd and kill stop ``ecoin-sim run`` with SIGTERM: its devices stop with it."""
    kid, (n, e) = coin_key[1]
    (tmp_path / "coin.json").write_text(json.dumps({"kid": kid.hex(), "n": format(n, "x"), "e": e}))
    (tmp_path / "cfg.json").write_text(json.dumps(FAST))
    (tmp_path / "coins").write_bytes(os.urandom(32 * 50))
    (tmp_path / "key").write_bytes(os.urandom(32))
    flash = tmp_path / "dev-t"
    out = sim(
        "deploy", str(flash), "--device-id", "dev-t", "--service", "average",
        "--coins", str(tmp_path / "coins"), "--device-key", str(tmp_path / "key"),
        "--bank-key", str(tmp_path / "coin.json"), "--config", str(tmp_path / "cfg.json"),
        "--broker", f"127.0.0.1:{broker.port}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    run = subprocess.Popen(
        [*SIM, "run", str(flash)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not responder.ops and time.monotonic() < deadline:
            time.sleep(0.05)
        assert responder.ops, "the device never sent an operation"
        assert _device_processes(flash), "no device process found"
        run.terminate()
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
        left = _device_processes(flash)
        for pid in left:  # the failure being tested: clean up after it
            os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in output, output
    assert left == [], output


def test_bad_arguments_are_usage_errors_naming_what_is_wrong(tmp_path: Path, coin_key):
    kid, (n, e) = coin_key[1]
    (tmp_path / "coin.json").write_text(json.dumps({"kid": kid.hex(), "n": format(n, "x"), "e": e}))
    (tmp_path / "coins").write_bytes(os.urandom(32 * 3))
    (tmp_path / "key").write_bytes(os.urandom(32))
    (tmp_path / "cfg.json").write_text("{}")
    files = (
        "--coins",
        str(tmp_path / "coins"),
        "--device-key",
        str(tmp_path / "key"),
        "--service",
        "average",
    )

    def deploy(*extra: str) -> subprocess.CompletedProcess[str]:
        return sim("deploy", str(tmp_path / "f"), *files, *extra)

    key = ("--bank-key", str(tmp_path / "coin.json"))
    cases = [
        (deploy("--device-id", "d1", "--bank-key", str(tmp_path / "cfg.json")), "not a coin public key"),
        (deploy("--device-id", "d1", *key, "--broker", "nonsense"), "--broker wants HOST:PORT"),
        (deploy("--device-id", "bad id", *key), "--device-id 'bad id': 1 to 32 of"),
        (deploy("--device-id", "d1", *key, "--set", "foo=bar"), "--set foo: not a firmware setting"),
        (sim("run", str(tmp_path), "--heap", "abc"), "'abc': a size like 72K"),
        (sim("run", str(tmp_path), "--devices", "0"), "'0': a whole number of at least 1"),
        (sim("claim", str(tmp_path / "nowhere")), "not a flash directory (no config.json)"),
    ]
    for run, message in cases:
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "f").exists()  # nothing deployed by a refused command

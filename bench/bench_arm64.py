"""The gateway's footprint on a Raspberry Pi's architecture, next to the same figures native.

    arm64_gateway_rss_mb_idle      resident memory of the arm64 `ecoin-gateway serve`, idle
    arm64_gateway_rss_mb_50ops     ... its peak while routing 50 operations per second
    arm64_gateway_rss_mb           the larger of the two: what to budget on the Pi
    arm64_gateway_cpu_ms_per_op    CPU per routed operation, EMULATED (QEMU user mode on this
                                   x86_64 machine): an upper bound for a Raspberry Pi 4, whose
                                   cores run the same code natively
    arm64_gateway_ready_s          start to serving (both links up, the service live)
    native_gateway_*               the same, the gateway run natively here

Under emulation the resident set includes QEMU's own memory (its translated-code cache), so
the arm64 figure overstates what the Pi needs. Every party but the gateway is native: a
plain Mosquitto, the echo analyst of bench_gateway, and a paced load of 10 devices in this
process. Run: ``python -m bench.run arm64`` (it builds the arm64 root the first time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from bench import cputime
from bench.bench_gateway import _frame, _spawn, _stop
from ecoin.testing.arm64 import Arm64Root, is_emulated, wait_serving
from ecoin.testing.servers import Mosquitto, free_port

CHECKOUT = Path(__file__).resolve().parents[1]
RATE = 50.0  # operations per second
LOAD_S = 20.0
IDLE_S = 5.0
DEVICES = 10
NOTE = "emulated: QEMU user mode on x86_64, an upper bound for a Raspberry Pi 4"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _config(path: Path, queue: str, port: int, health: int) -> None:
    table = {
        "gateway_id": "gwbench",
        "log_level": "warning",
        "edge": {"port": port},
        "upstream": {"port": port},
        "queue": {"path": queue},
        "limits": {"rate_per_s": 1000.0, "burst": 1000},
        "health": {"port": health},
    }
    path.write_text(tomli_w.dumps({"gateway": table}))


def _paced_load(port: int, pid: int) -> dict[str, float]:
    """RATE operations per second over DEVICES devices for LOAD_S; returns the answered
    count, the gateway's CPU over the window and its peak resident memory."""
    answered = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pace", protocol=mqtt.MQTTv311)
    client.on_message = lambda *a: answered.release()
    client.connect("127.0.0.1", port)
    client.subscribe([(f"ecoin/dev/pace-{i}/down", 1) for i in range(DEVICES)])
    client.loop_start()
    time.sleep(0.5)
    cpu0, peak, sent = cputime.process(pid), 0.0, 0
    start = time.monotonic()
    while (now := time.monotonic()) < start + LOAD_S:
        while sent < (now - start) * RATE:
            client.publish(f"ecoin/dev/pace-{sent % DEVICES}/up", _frame(), 1)
            sent += 1
        peak = max(peak, _rss_mb(pid))
        time.sleep(0.01)
    got = 0
    deadline = time.monotonic() + 30
    while got < sent and answered.acquire(timeout=max(0.0, deadline - time.monotonic())):
        got += 1
    used = cputime.process(pid) - cpu0
    client.loop_stop()
    client.disconnect()
    return {"sent": sent, "answered": got, "cpu_s": used, "peak_mb": peak}


def _measure(kind: str, cmd: list[str], port: int, health: int, log: Path) -> dict[str, float]:
    with open(log, "ab") as out:
        gw = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        ready = wait_serving(health, gw, {"echo"}, log)
        if kind == "arm64" and not is_emulated(gw.pid):
            raise RuntimeError("the arm64 gateway is not running under QEMU")
        time.sleep(2.0)  # settled
        cpu0 = cputime.process(gw.pid)
        time.sleep(IDLE_S)
        idle_mb, idle_cpu = _rss_mb(gw.pid), (cputime.process(gw.pid) - cpu0) / IDLE_S * 100
        load = _paced_load(port, gw.pid)
        if load["answered"] < load["sent"]:
            raise RuntimeError(f"{kind}: {load['answered']} of {load['sent']} operations answered")
        return {
            f"{kind}_gateway_rss_mb_idle": round(idle_mb, 1),
            f"{kind}_gateway_rss_mb_50ops": round(load["peak_mb"], 1),
            f"{kind}_gateway_rss_mb": round(max(idle_mb, load["peak_mb"]), 1),
            f"{kind}_gateway_cpu_ms_per_op": round(load["cpu_s"] * 1000 / load["answered"], 3),
            f"{kind}_gateway_idle_cpu_pct": round(idle_cpu, 2),
            f"{kind}_gateway_ready_s": round(ready, 2),
        }
    finally:
        _stop(gw)


def run(workdir: Path) -> dict[str, float | int | str]:
    pi = Arm64Root.prepare(CHECKOUT, workdir / "pi")
    port = free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    broker = Mosquitto(workdir / "mosquitto", conf, port).start()
    echo = _spawn("echo", str(port), wait_ready=True)
    figures: dict[str, float | int | str] = {"arm64_gateway_cpu_note": NOTE}
    try:
        health = free_port()
        native = workdir / "native.toml"
        _config(native, str(workdir / "native-queue.sqlite"), port, health)
        cmd = [sys.executable, "-m", "ecoin.gateway.cli", "serve", "--config", str(native)]
        figures.update(_measure("native", cmd, port, health, workdir / "native.log"))
        health = free_port()
        emulated = pi.workdir / "gateway.toml"
        _config(emulated, pi.inside(pi.workdir) + "/queue.sqlite", port, health)
        cmd = pi.command(["ecoin-gateway", "serve", "--config", pi.inside(emulated)])
        figures.update(_measure("arm64", cmd, port, health, workdir / "arm64.log"))
    finally:
        _stop(echo)
        broker.stop()
    return figures


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())), indent=2))

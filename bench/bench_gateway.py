"""Gateway throughput and latency against a real Mosquitto, next to the broker's own speed.

    gateway_ops_per_s    operations routed per second: 200 simulated devices (closed loop, one
                         operation outstanding each), the analyst replaced by an echo
    mosquitto_raw_per_s  one-hop publish -> subscriber messages per second, same broker, same
                         client library (paho), same QoS (1) and payload size, same run
                         (measured before and after the gateway's run; the mean)
    gateway_vs_raw       their ratio; one operation crosses the broker four times, so 0.25
                         is the ceiling (target >= 0.2)
    gateway_p50_ms/p99   a device's round trip (frame out -> answer in) under that load
                         (mostly queueing: 200 outstanding / throughput)
    gateway_unloaded_p50_ms/p99  the same round trip for one device alone
    gateway_idle_cpu_pct the gateway process's CPU over 10 s of idle, in % of one core

Every party is its own process (the gateway is the real ``ecoin-gateway serve``), so no
two of them share an interpreter lock. Run: ``python -m bench.run gateway``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.protocol import wire
from ecoin.testing.servers import Mosquitto, free_port

from . import cputime

DEVICES = 200
CONNECTIONS = 4  # the devices are spread over a few MQTT connections of one load process
LOAD_S = 10.0
WARMUP_S = 2.0
RAW_N = 30_000
IDLE_S = 10.0
PAYLOAD = 64  # ciphertext bytes: a small reading


def _frame() -> bytes:
    return bytes(
        wire.encode_operation(os.urandom(16), os.urandom(8), "echo", os.urandom(256), os.urandom(PAYLOAD))
    )


def _client(port: int, name: str, v5: bool = False, inflight: int = 1000) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    )
    c.max_inflight_messages_set(inflight)
    c.connect("127.0.0.1", port)
    return c


class _Correlation(Properties):
    """Correlation data only, packed directly (paho's generic Properties costs ~20 µs)."""

    def __init__(self, corr: bytes) -> None:
        body = b"\x09" + len(corr).to_bytes(2, "big") + corr
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", bytes([len(body)]) + body)

    def pack(self) -> bytes:
        return self._packed  # type: ignore[no-any-return,attr-defined]


# The parties, each run as `python -m bench.bench_gateway <role> ...` in its own process.


def echo(port: int) -> None:
    """The analyst stand-in: answers every operation with a RESULT-shaped frame."""
    c = _client(port, "bench-echo", v5=True)
    answer = bytes(wire.encode_result(bytes(16), bytes(16), bytes(32)))

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        reply = bytearray(answer)
        reply[2:18] = msg.payload[2:18]
        props = _Correlation(msg.properties.CorrelationData)
        client.publish(msg.properties.ResponseTopic, bytes(reply), 1, properties=props)

    c.on_message = on_message
    c.subscribe("$share/ecoin-echo/ecoin/svc/echo/op", 1)
    c.publish(
        "ecoin/svc/echo/analyst/bench", json.dumps({"service": "echo", "analyst": "bench"}), 1, retain=True
    )
    print("ready", flush=True)
    c.loop_forever()


def load(port: int, seconds: float, out: str, devices: int = DEVICES) -> None:
    """200 devices over a few connections, each with one operation outstanding at a time."""
    lock = threading.Lock()
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    done = [0]
    measuring = [False]
    clients = []
    for k in range(CONNECTIONS):
        c = _client(port, f"bench-load-{k}")
        ids = [f"d{i:03d}" for i in range(k, devices, CONNECTIONS)]

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            now = time.perf_counter()
            device = msg.topic.split("/")[2]
            with lock:
                start = sent_at.pop(bytes(msg.payload[2:18]), None)
                if start is not None and measuring[0]:
                    latencies.append(now - start)
                    done[0] += 1
            fire(client, device)

        c.on_message = on_message
        for d in ids:
            c.subscribe(f"ecoin/dev/{d}/down", 1)
        c.loop_start()
        clients.append((c, ids))

    def fire(client: mqtt.Client, device: str) -> None:
        frame = _frame()
        with lock:
            sent_at[frame[2:18]] = time.perf_counter()
        client.publish(f"ecoin/dev/{device}/up", frame, 1)

    time.sleep(1.0)
    for c, ids in clients:
        for d in ids:
            fire(c, d)
    time.sleep(WARMUP_S)
    with lock:
        measuring[0] = True
        t0 = time.perf_counter()
    time.sleep(seconds)
    with lock:
        measuring[0] = False
        elapsed = time.perf_counter() - t0
        n = done[0]
        lat = sorted(latencies)
    for c, _ in clients:
        c.disconnect()
        c.loop_stop()
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [float("nan")] * 99
    Path(out).write_text(
        json.dumps({"ops_per_s": n / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "ops": n})
    )


def rawsub(port: int, n: int, out: str) -> None:
    got = [0]
    first = [0.0]
    finished = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if got[0] == 0:
            first[0] = time.perf_counter()
        got[0] += 1
        if got[0] == n:
            finished.set()

    c = _client(port, "bench-rawsub")
    c.on_message = on_message
    c.subscribe("bench/raw", 1)
    c.loop_start()
    print("ready", flush=True)
    finished.wait(120)
    elapsed = time.perf_counter() - first[0]
    c.loop_stop()
    Path(out).write_text(json.dumps({"msgs_per_s": (got[0] - 1) / elapsed, "got": got[0]}))


def rawpub(port: int, n: int) -> None:
    c = _client(port, "bench-rawpub", inflight=100)
    c.loop_start()
    time.sleep(0.5)
    frame = _frame()
    infos = [c.publish("bench/raw", frame, 1) for _ in range(n)]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


# The benchmark.


def _spawn(*args: str, wait_ready: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_gateway", *args], stdout=subprocess.PIPE, text=True
    )
    if wait_ready:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"bench party {args[0]} did not start")
    return proc


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure_raw(port: int, workdir: Path) -> float:
    out = workdir / "raw.json"
    sub = _spawn("rawsub", str(port), str(RAW_N), str(out), wait_ready=True)
    pub = _spawn("rawpub", str(port), str(RAW_N))
    pub.wait(180)
    sub.wait(180)
    return float(json.loads(out.read_text())["msgs_per_s"])


def _gateway_config(workdir: Path, port: int) -> Path:
    path = workdir / "gateway.toml"
    path.write_text(
        f"""[gateway]
gateway_id = "gwbench"
log_level = "warning"
op_timeout_s = 30.0
[gateway.edge]
port = {port}
[gateway.upstream]
port = {port}
[gateway.queue]
path = "{workdir / "queue.sqlite"}"
[gateway.limits]
rate_per_s = 10000.0
burst = 10000
window = 256
[gateway.health]
port = 0
"""
    )
    return path


def run(workdir: Path) -> dict[str, float | int | str]:
    port = free_port()
    # The settings broker-config writes for production (set_tcp_nodelay, max_inflight).
    conf = (
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\nset_tcp_nodelay true\n"
    )
    broker = Mosquitto(workdir / "mosquitto", conf, port).start()
    procs: list[subprocess.Popen[Any]] = []
    try:
        raw_before = measure_raw(port, workdir)
        procs.append(_spawn("echo", str(port), wait_ready=True))
        gw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecoin.gateway.cli",
                "serve",
                "--config",
                str(_gateway_config(workdir, port)),
            ]
        )
        procs.append(gw)
        time.sleep(2.0)  # connected and the directory synced
        out = workdir / "load.json"
        loader = _spawn("load", str(port), str(LOAD_S), str(out))
        loader.wait(LOAD_S + 120)
        figures = json.loads(out.read_text())
        single = workdir / "single.json"  # one device alone: the latency the path adds, no queueing
        _spawn("load", str(port), "3", str(single), "1").wait(120)
        alone = json.loads(single.read_text())
        time.sleep(2.0)
        cpu0, t0 = cputime.process(gw.pid), time.monotonic()
        time.sleep(IDLE_S)
        idle = (cputime.process(gw.pid) - cpu0) / (time.monotonic() - t0) * 100
        # The raw hop again, and the mean: other work on a shared machine moves both figures.
        raw = (raw_before + measure_raw(port, workdir)) / 2
        ops = float(figures["ops_per_s"])
        return {
            "gateway_ops_per_s": round(ops, 1),
            "mosquitto_raw_per_s": round(raw, 1),
            "gateway_vs_raw": round(ops / raw, 3),
            "gateway_p50_ms": round(float(figures["p50_ms"]), 2),
            "gateway_p99_ms": round(float(figures["p99_ms"]), 2),
            "gateway_unloaded_p50_ms": round(float(alone["p50_ms"]), 3),
            "gateway_unloaded_p99_ms": round(float(alone["p99_ms"]), 3),
            "gateway_idle_cpu_pct": round(idle, 2),
        }
    finally:
        for proc in reversed(procs):
            _stop(proc)
        broker.stop()


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "echo":
        echo(int(rest[0]))
    elif role == "load":
        load(int(rest[0]), float(rest[1]), rest[2], *(int(x) for x in rest[3:]))
    elif role == "rawsub":
        rawsub(int(rest[0]), int(rest[1]), rest[2])
    elif role == "rawpub":
        rawpub(int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown role {role}")

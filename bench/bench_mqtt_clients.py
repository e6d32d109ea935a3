"""paho against gmqtt on the analyst's MQTT pattern, side by side in one run (issue 15: "if
paho itself is the limit, measure an alternative client side by side before changing").

One Mosquitto configured by the gateway's generator (TLS, certificates and passwords, ACLs)
and one process per client (bench/mqtt_subjects.py): paho 2.x on MQTT 5 as the analyst
configures it, gmqtt on MQTT 5, paho on MQTT 3.1.1 (the same work without properties), and
paho 5 and gmqtt again with each operation handed to a thread and back, as in the analyst.
A requester playing the gateway publishes real v2 OPERATION frames at QoS 1 with a response
topic and correlation data, at most WINDOW ahead of the replies (below the broker's queue
limit, so nothing is dropped); each client answers each with a RESULT-sized QoS 1 reply and
acknowledges the operation once the broker has the reply. Rounds of MSGS messages alternate
between the clients (the order rotates each round), after a warm-up of each.

Figures, per client (mqtt_subjects.KINDS), medians over ROUNDS rounds:
- mqtt_clients_<kind>_msgs_per_s: replies per second, first publish to last reply;
- mqtt_clients_<kind>_cpu_ms: CPU time (user + system, all threads) of the client process
  per message: what the client library costs the analyst for receive, reply and ack;
- mqtt_clients_<kind>_broker_cpu_ms: the broker's CPU per message over the same rounds;
- mqtt_clients_<kind>_rounds: every round's ``msgs/s@cpu_ms``, in the order run.
bench/run.py divides them into mqtt_gmqtt_vs_paho5_cpu, mqtt_paho311_vs_paho5_cpu (what
MQTT 5's properties cost paho) and mqtt_gmqtt_vs_paho5_handoff_cpu (both with a thread hop).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.testing.analyst import Requester, tls_broker
from ecoin.tools import pki as pki_tool

from . import cputime
from .mqtt_subjects import KINDS, operation_frame, result_frame

SERVICES = dict(zip(KINDS, ("average", "stats", "size", "anomaly", "echo"), strict=True))  # a topic each
ROUNDS = 3
MSGS = 4000
WARMUP = 300
WINDOW = 500
ROUND_S = 120.0
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m bench.…`` finds the bench


def order(rnd: int) -> list[str]:
    """The clients in round ``rnd``: rotated, so none always runs first or last."""
    k = rnd % len(KINDS)
    return [*KINDS[k:], *KINDS[:k]]


def summary(rounds: list[tuple[float, float, float]]) -> dict[str, float | str]:
    """Medians of (msgs/s, client CPU ms, broker CPU ms) rounds, and the rounds as text."""
    rate, cpu, broker = (statistics.median(r[i] for r in rounds) for i in range(3))
    return {
        "msgs_per_s": round(rate, 1),
        "cpu_ms": round(cpu, 4),
        "broker_cpu_ms": round(broker, 4),
        "rounds": " ".join(f"{r[0]:.0f}@{r[1]:.3f}" for r in rounds),
    }


@contextmanager
def subject(kind: str, port: int, pki: Path, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A client process, subscribed; its stdin closed (it disconnects) on exit."""
    log = workdir / f"{kind}.log"
    cmd = [sys.executable, "-m", "bench.mqtt_subjects", kind, str(port), str(pki), SERVICES[kind]]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != b"ready":  # it exits if it cannot subscribe
            raise RuntimeError(f"{kind} did not start: {log.read_text()[-2000:]}")
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_round(
    gw: Requester, kind: str, frame: bytes, n: int, pids: tuple[int, int]
) -> tuple[float, float, float]:
    """(msgs/s, client CPU ms per message, broker CPU ms per message) of ``n`` operations."""
    base = len(gw.arrivals)
    cpu = [cputime.precise(p) for p in pids]
    started = time.monotonic()
    for i in range(n):
        if i - (len(gw.arrivals) - base) >= WINDOW and not gw.wait_arrivals(base + i - WINDOW + 1, ROUND_S):
            raise RuntimeError(f"{kind}: no reply for {ROUND_S}s")
        gw.send(SERVICES[kind], frame, b"%s-%d" % (kind.encode(), base + i))
    if not gw.wait_arrivals(base + n, ROUND_S):
        raise RuntimeError(f"{kind}: {len(gw.arrivals) - base} of {n} replies")
    elapsed = gw.arrivals[-1] - started
    used = [(cputime.precise(p) - c) * 1000 / n for p, c in zip(pids, cpu, strict=True)]
    return n / elapsed, used[0], used[1]


def run(workdir: Path) -> dict[str, float | int | str]:
    pki = workdir / "pki"
    pki_tool.init(pki)
    for role, name in (("analyst", "alice"), ("gateway", "gw1")):
        pki_tool.issue(pki, role, name)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    frame = operation_frame((key.n, key.e))
    broker = tls_broker(workdir / "mq", pki, {"alice": list(SERVICES.values())}).start()
    rounds: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
    try:
        assert broker.proc is not None
        with ExitStack() as stack:
            procs = {k: stack.enter_context(subject(k, broker.port, pki, workdir)) for k in KINDS}
            gw = Requester(broker.port, pki)
            stack.callback(gw.close)
            pids = {k: (procs[k].pid, broker.proc.pid) for k in KINDS}
            for k in KINDS:
                one_round(gw, k, frame, WARMUP, pids[k])
            for rnd in range(ROUNDS):
                for k in order(rnd):
                    rounds[k].append(one_round(gw, k, frame, MSGS, pids[k]))
    finally:
        broker.stop()
    out: dict[str, float | int | str] = {
        "mqtt_clients_rounds": ROUNDS,
        "mqtt_clients_msgs_per_round": MSGS,
        "mqtt_clients_operation_bytes": len(frame),
        "mqtt_clients_result_bytes": len(result_frame()),
        "mqtt_clients_loadavg": round(os.getloadavg()[0], 2),
    }
    for k in KINDS:
        out.update({f"mqtt_clients_{k}_{name}": v for name, v in summary(rounds[k]).items()})
    return out


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ecoin-bench-mqtt-clients-") as tmp:
        json.dump(run(Path(tmp)), sys.stdout, indent=2)
        print()

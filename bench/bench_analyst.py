"""Analyst throughput and where its time goes, measured end to end on real components.

One ``ecoin-analyst serve`` process offering ``average`` (its default worker count), a real
bank process (SQLite, mTLS), Mosquitto with TLS and the gateway's generated ACLs, and a
requester that publishes OPERATION frames sealed from real coins exactly as the gateway
does (QoS 1, response topic, correlation data).

Figures:
- analyst_ops_per_s: operations answered per second when OPS operations are queued at once
  (first publish to last RESULT), after a warm-up.
- analyst_bank_ms, analyst_crypto_ms, analyst_analysis_ms, analyst_mqtt_ms: per operation,
  from the analyst's own /metrics over the measured run: the redeem round trip (a batch's
  time divided by its headers), tag check + decryption + sealing, the analyser worker round
  trip (parse, check, analyse, encode), and publishing the reply until the broker's PUBACK.
  They are costs per operation, not a split of 1/throughput: the stages overlap.
- analyst_bank_batch_mean: headers per redeem call under that load.
- analyst_cpu_ms: CPU time of the analyst process and its analyser workers per operation
  over the measured run: what the analyst itself costs (1000 / it = ops/s per busy core).
- analyst_latency_ms_p50: one operation at a time, publish to RESULT (an idle system);
  analyst_unloaded_bank_ms and analyst_unloaded_mqtt_ms are the redeem call (one header)
  and the reply's publish-to-PUBACK time in that phase.
- analyst_bank_direct_per_s: this bench's bank redeeming DIRECT coins straight from a load
  process like bench_bank's (batches of 256, 4 connections), just before the analyst runs:
  what the analyst is compared with in the same run (analyst_vs_bank_same_run).
- analyst_2x_ops_per_s, analyst_2x_vs_1x: the same load on two processes of one analyst
  sharing the service, and its ratio to one process (same run).
- analyst_paho_qos1_*: raw paho 2.x QoS 1 delivery with manual acks, the analyst's MQTT
  configuration, on the same broker: the ceiling of the MQTT path alone, and what limits it
  (bench/mqtt_ceiling.py).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

from ecoin.testing import profile
from ecoin.testing.analyst import AnalystProcess, Requester, seal, tls_broker, withdraw
from ecoin.testing.bank import BankProcess
from ecoin.tools import pki as pki_tool

from . import cputime, mqtt_ceiling
from .bench_bank import redeem_rate

WARMUP = 200
OPS = 3000
UNLOADED = 100
DIRECT = 3072  # coins redeemed straight at this bench's bank, as bench_bank does


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def _per_op_ms(after: dict[str, float], before: dict[str, float], name: str, ops: int) -> float:
    return round(_delta(after, before, name) / ops * 1000, 4)


def _unloaded_latency_ms(gw: Requester, ops: list, base: int) -> float:  # type: ignore[type-arg]
    times = []
    for i, op in enumerate(ops):
        started = time.monotonic()
        gw.send("average", op.frame, b"u%d" % (base + i))
        if not gw.wait(len(gw.replies) + 1, timeout=30):
            raise RuntimeError("an unloaded operation got no answer")
        times.append(time.monotonic() - started)
    return round(statistics.median(times) * 1000, 3)


def _two_instances(workdir: Path, pki: Path, port: int, bank_url: str, ops: list) -> float:  # type: ignore[type-arg]
    """Operations per second with two processes of one analyst sharing the service (MQTT 5
    shared subscription), each with half the cores' workers, measured like one."""
    limits = {"workers": max(1, (os.cpu_count() or 2) // 2), "drain_s": 5.0}
    with contextlib.ExitStack() as stack:
        for i in ("1", "2"):
            stack.enter_context(AnalystProcess(workdir / f"analyst-2x-{i}", pki, port, bank_url, ["average"],
                                               instance=i, limits=limits))  # fmt: skip
        gw = Requester(port, pki)
        gw.send_all("average", ops[:WARMUP], start=10**6)
        if not gw.wait(WARMUP, 60):
            raise RuntimeError("two instances: warm-up operations were not all answered")
        started = time.monotonic()
        gw.send_all("average", ops[WARMUP:], start=10**6 + WARMUP)
        if not gw.wait(len(ops), 300):
            raise RuntimeError("two instances: not every operation was answered")
        elapsed = gw.arrivals[-1] - started
        gw.close()
    return round((len(ops) - WARMUP) / elapsed, 1)


def run(workdir: Path) -> dict[str, float | int | str]:
    pki = workdir / "pki"
    pki_tool.init(pki)
    for role, name in (("analyst", "alice"), ("gateway", "gw1"), ("owner", "olive")):
        pki_tool.issue(pki, role, name)
    analysts = {"alice": ["average"]}
    out: dict[str, float | int | str] = {}
    with BankProcess(workdir / "bank", pki, workers=-1, expire_every_s=0) as bank:
        direct = withdraw(bank, DIRECT, analysts)
        out["analyst_bank_direct_per_s"] = round(redeem_rate(bank, list(direct.coins), direct, 256, 4), 1)
        coins = withdraw(bank, 2 * (WARMUP + OPS) + UNLOADED, analysts)
        ops = seal(coins, "average")
        warm, measured, single = ops[:WARMUP], ops[WARMUP : WARMUP + OPS], ops[WARMUP + OPS : -WARMUP - OPS]
        second = ops[-WARMUP - OPS :]
        broker = tls_broker(workdir / "mq", pki, analysts, instances={"alice": ["1", "2"]}).start()
        try:
            assert broker.proc is not None
            out.update(mqtt_ceiling.measure(broker.port, pki, broker.proc.pid))
            limits = {"workers": -1, "drain_s": 5.0}
            with AnalystProcess(
                workdir / "analyst", pki, broker.port, bank.url, ["average"], limits=limits
            ) as a:
                gw = Requester(broker.port, pki)
                gw.send_all("average", warm)
                if not gw.wait(WARMUP, 60):
                    raise RuntimeError("warm-up operations were not all answered")
                assert a.proc is not None
                before, cpu_before = a.metrics(), cputime.tree(a.proc.pid)
                started = time.monotonic()
                with profile.sampled(a.proc.pid, "analyst"):
                    gw.send_all("average", measured, start=WARMUP)
                    if not gw.wait(WARMUP + OPS, 300):
                        raise RuntimeError(f"only {len(gw.replies) - WARMUP} of {OPS} answered")
                elapsed = gw.arrivals[-1] - started
                after, cpu_after = a.metrics(), cputime.tree(a.proc.pid)
                out["analyst_latency_ms_p50"] = _unloaded_latency_ms(gw, single, 0)
                idle = a.metrics()
                gw.close()
            failed = [c for c, frames in gw.replies.items() if frames[0][1] != 2]
            if failed:
                raise RuntimeError(f"{len(failed)} operations failed")
            two = _two_instances(workdir, pki, broker.port, bank.url, second)
            out["analyst_2x_ops_per_s"] = two
            out["analyst_2x_vs_1x"] = round(two / (OPS / elapsed), 3)
        finally:
            broker.stop()
    ok = _delta(after, before, 'ecoin_analyst_operations_total{outcome="ok",service="average"}')
    calls = _delta(after, before, "ecoin_analyst_bank_seconds_count")
    out.update(
        {
            "analyst_ops_per_s": round(OPS / elapsed, 1),
            "analyst_bank_ms": _per_op_ms(after, before, "ecoin_analyst_bank_seconds_sum", int(ok)),
            "analyst_crypto_ms": _per_op_ms(after, before, "ecoin_analyst_crypto_seconds_sum", int(ok)),
            "analyst_analysis_ms": _per_op_ms(
                after, before, 'ecoin_analyst_analysis_seconds_sum{service="average"}', int(ok)
            ),
            "analyst_mqtt_ms": _per_op_ms(after, before, "ecoin_analyst_reply_seconds_sum", int(ok)),
            "analyst_bank_batch_mean": round(ok / calls, 1) if calls else 0.0,
            "analyst_cpu_ms": round((cpu_after - cpu_before) / ok * 1000, 4),
            "analyst_unloaded_bank_ms": _per_op_ms(idle, after, "ecoin_analyst_bank_seconds_sum", UNLOADED),
            "analyst_unloaded_mqtt_ms": _per_op_ms(idle, after, "ecoin_analyst_reply_seconds_sum", UNLOADED),
        }
    )
    return out


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ecoin-bench-analyst-") as tmp:
        json.dump(run(Path(tmp)), sys.stdout, indent=2)
        print()

"""The service side at a stated load: CPython devices (bench/loadgen.py) through the real
edge broker, gateway, analysts and bank of `make demo`, without simulated firmware
competing for the CPU.

Figures:
- e2e_p50_ms, e2e_p99_ms: send to verified RESULT at 50 operations per second offered
  (50 devices x 1 op/s, open loop), the median of three 10 s phases (the machine is shared:
  one phase's p99 is five operations, and one stall of another process moves it);
  e2e_p99_ms_max is the worst of the three.
- service_e2e_ops_per_s: the highest offered rate the system kept up with (every operation
  answered, none failed, answers at >= 90 % of the offered rate), raised by 1.5x per step.
- service_e2e_p99_ms: the p99 latency at that rate.
- e2e_stage_p99_ms_<stage>: where the stated load's p99 goes, from each service's own
  histograms over the three stated phases (upper bound of the bucket, so coarse): gateway
  (device frame to answer, the whole service side), analyst (operation taken to
  acknowledged), redeem (the analyst's bank call), bank (the bank's own time for a redeem
  request), analysis (the worker round trip), reply (publish to the broker's PUBACK).
- e2e_loadavg: the 1-minute load average when the stated phases ended (other work on the
  machine shows up in the p99; compare figures within one run).

The analysts redeem over two bank connections (``bank.connections = 2``): with one, an
operation arriving while a batch is at the bank waits for that whole call, and that wait
was the largest part of the p99 (docs/SCALING.md 1.3).
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from ecoin.gateway import brokerconf
from ecoin.sim.demo import ANALYSTS, OWNER, Demo
from ecoin.testing import metrics
from ecoin.testing.analyst import AnalystProcess
from ecoin.testing.bank import BankProcess

from . import loadgen

DEVICES = 50
COINS = 400  # per device: enough for the saturation ramp
STEP_S = 4.0
STATED_RUNS = 3
REDEEM_CONNECTIONS = 2  # what docs/SCALING.md 1.3 recommends


def run(workdir: Path) -> dict[str, float | int]:
    demo = Demo(workdir, DEVICES, 0, "72K", "auto", quiet=True)  # the firmware needs 66 KiB since issue 10
    with demo.stack:
        pki_dir = demo.make_pki()
        broker = demo.start_broker(pki_dir)
        bank = demo.stack.enter_context(BankProcess(workdir / "bank", pki_dir, workers=2))
        demo.open_accounts(bank)
        bank.admin.fund(OWNER, DEVICES * COINS, request_id="bench-system-funding")
        analysts = {}
        for analyst, services in ANALYSTS.items():
            analysts[analyst] = demo.stack.enter_context(
                AnalystProcess(
                    workdir / "analyst" / analyst,
                    pki_dir,
                    broker["service_port"],
                    bank.url,
                    services,
                    analyst,
                    bank={"url": bank.url, "connections": REDEEM_CONNECTIONS},
                )  # fmt: skip
            )
        demo.start_gateway(pki_dir, broker["service_port"], bank.url)
        passwords = brokerconf.load_credentials(broker["credentials"])
        devices = []
        with bank.client("owner", OWNER) as owner:
            for i in range(DEVICES):
                name = demo.device_name(i)
                owner.register_device(name, os.urandom(32))
                coins = owner.withdraw(name, COINS, request_id=f"bench-{name}")
                devices.append(loadgen.Device(name, passwords[name], broker["device_port"], coins, "average"))
        fleet = demo.stack.enter_context(_closing(loadgen.Fleet(devices)))
        fleet.offer(20, 2.0)  # warm-up: connections, worker processes, bank sessions
        scrape = _Scrape(bank, analysts["alice"], demo.gateway_health_port)
        before = scrape()
        phases = [loadgen.summary(fleet.offer(50, 10.0)) for _ in range(STATED_RUNS)]
        stages = scrape.stages(before, scrape())
        load = os.getloadavg()[0]
        top = fleet.saturate(100, STEP_S)
        best = loadgen.summary(top)
    return {
        "e2e_offered_per_s": 50,
        "e2e_p50_ms": statistics.median(p["p50_ms"] for p in phases),
        "e2e_p99_ms": statistics.median(p["p99_ms"] for p in phases),
        "e2e_p99_ms_max": max(p["p99_ms"] for p in phases),
        "e2e_failed": int(sum(p["failed"] + p["unanswered"] for p in phases)),
        "service_e2e_ops_per_s": best["answered_per_s"],
        "service_e2e_offered_per_s": round(top.offered_per_s, 1),
        "service_e2e_p99_ms": best["p99_ms"],
        "e2e_loadavg": round(load, 2),
        **stages,
    }


class _Scrape:
    """The /metrics of the bank, the analyst serving the load and the gateway, together."""

    def __init__(self, bank: BankProcess, analyst: AnalystProcess, gateway_port: int) -> None:
        self.ports = {"bank": bank.metrics_port, "analyst": analyst.metrics_port, "gateway": gateway_port}

    def __call__(self) -> dict[str, dict[str, float]]:
        return {k: metrics.fetch(port) for k, port in self.ports.items()}

    @staticmethod
    def stages(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        wanted = {
            "gateway": ("gateway", "ecoin_gateway_latency_seconds", {}),
            "analyst": ("analyst", "ecoin_analyst_operation_seconds", {"service": "average"}),
            "redeem": ("analyst", "ecoin_analyst_bank_seconds", {}),
            "bank": ("bank", "ecoin_bank_request_seconds", {"route": "redeem"}),
            "analysis": ("analyst", "ecoin_analyst_analysis_seconds", {"service": "average"}),
            "reply": ("analyst", "ecoin_analyst_reply_seconds", {}),
        }
        out = {}
        for stage, (who, name, labels) in wanted.items():
            q = metrics.quantile(after[who], before[who], name, 0.99, **labels)
            out[f"e2e_stage_p99_ms_{stage}"] = round(q * 1000, 1)
        return out


class _closing:
    def __init__(self, fleet: loadgen.Fleet) -> None:
        self.fleet = fleet

    def __enter__(self) -> loadgen.Fleet:
        return self.fleet

    def __exit__(self, *exc: object) -> None:
        self.fleet.close()

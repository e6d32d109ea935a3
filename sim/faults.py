"""``make faults``: the whole system of ``make demo`` under kill -9 and SIGSTOP, measured.

Each run starts the demo's stack (PKI, Mosquitto with the generated configuration, the bank
on SQLite, two analysts, the gateway, devices running the real firmware on MicroPython),
then injects faults one after another, each at a random moment and while an operation is
in flight: kill -9 of the bank, Mosquitto, the gateway, an analyst or a device (restarted
at once, as systemd's Restart=always would), SIGSTOP/SIGCONT of the gateway, and a bank
outage longer than a device waits (down, or frozen, for 25 s). Faults are
spaced by the operation timeout so what one costs is not counted against the next. At the
end the devices are stopped between operations, every coin is reconciled with the bank
(``ecoin.testing.faults``), the bank is audited, and the table goes to ``build/faults/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoin.sim import demo
from ecoin.testing import faults
from ecoin.testing.analyst import AnalystProcess
from ecoin.testing.bank import BankProcess
from ecoin.testing.servers import Mosquitto, stop, wait_for_port

KINDS = ("bank", "mosquitto", "gateway", "analyst", "device", "gateway-stop", "bank-outage", "bank-stop")
OP_TIMEOUT = 20.0  # the demo's op_timeout: after it, an operation a fault cut is in doubt


class RecordingStack(contextlib.ExitStack):
    """The demo's exit stack, noting what it is given, so the harness can reach the
    processes the demo started (to kill and restart them) without the demo exposing them."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[Any] = []

    def enter_context(self, cm: Any) -> Any:
        self.parts.append(cm)
        return super().enter_context(cm)

    def callback(self, fn: Any, /, *args: Any, **kwds: Any) -> Any:
        self.parts.extend(a for a in args if isinstance(a, subprocess.Popen))
        return super().callback(fn, *args, **kwds)


@dataclass
class FaultRun(demo.Demo):
    kinds: tuple[str, ...] = KINDS
    stop_s: float = 20.0  # how long the gateway stays stopped
    outage_s: float = 25.0  # how long the bank stays down (killed) or frozen (stopped)
    seed: int = 1
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = RecordingStack()
        self.rng = random.Random(self.seed)
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"faults: {text}", flush=True)

    # The parts, as the demo started them.

    def parts(self, kind: type) -> list[Any]:
        assert isinstance(self.stack, RecordingStack)
        return [p for p in self.stack.parts if isinstance(p, kind)]

    def part(self, kind: type) -> Any:
        return self.parts(kind)[0]

    @property
    def gateway(self) -> subprocess.Popen[bytes]:
        return self.parts(subprocess.Popen)[-1]  # the latest one started

    def gateway_health(self) -> int:
        conf = tomllib.loads((self.workdir / "gateway" / "gateway.toml").read_text())
        return int(conf["gateway"]["health"]["port"])

    def restart_gateway(self) -> None:
        log = open(self.workdir / "gateway" / "gateway.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(self.gateway.args, stdout=log, stderr=log)
        log.close()
        self.stack.callback(stop, proc)
        wait_for_port(self.gateway_health())

    # The campaign: Demo.run calls watch() once everything runs.

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        self.t0 = time.monotonic()
        self.bank = bank
        self.wait_results(set(range(len(self.fleet))), timeout=60)
        done: list[faults.Fault] = []
        for kind in self.kinds:
            done.append(self.inject(kind))
        parts_up = self.parts_up()
        self.quiesce()
        with bank.client("owner", demo.OWNER) as owner:
            flashes = {d.name: d.sim.flash_dir for d in self.fleet}
            rec = faults.reconcile(owner, flashes, sum(self.credits(bank).values()))
        outside = faults.attribute(done, rec)
        self.results = {
            "faults": [faults.fault_dict(f) for f in done],
            "parts_up": parts_up,
            "coins_conserved": rec.conserved,
            "problems": rec.problems,
            "paid_outside_faults": outside,
            "coins_redeemed": rec.redeemed,
        }

    def inject(self, kind: str) -> faults.Fault:
        time.sleep(self.rng.uniform(0.0, 2.0))  # a random moment...
        victim = self.rng.randrange(len(self.fleet))
        affected = self.in_flight(kind, victim)  # ...while an operation is in flight
        before, settled = self.doubts(), self.settled()
        counts = self.result_counts()
        fault = faults.Fault(kind, time.monotonic() - self.t0)
        started = time.monotonic()
        self.say(f"{kind}: injecting at {fault.at:.1f}s")
        self.hit(kind, victim)
        fault.recovered = self.wait_results(affected, counts, timeout=60)
        if fault.recovered:
            fault.recovery_s = time.monotonic() - started
        # What the fault cut surfaces by the device's op_timeout at the latest.
        time.sleep(max(0.0, started + OP_TIMEOUT + 3.0 - time.monotonic()))
        fault.doubts = self.doubts() - before
        fault.late_results = len(self.settled() - settled)
        took = f"{fault.recovery_s:.1f}s" if fault.recovery_s is not None else "-"
        self.say(
            f"{kind}: recovered={fault.recovered} in {took}, {len(fault.doubts)} ops lost,"
            f" {fault.late_results} answered late"
        )
        return fault

    def in_flight(self, kind: str, victim: int) -> set[int]:
        """Waits (briefly) for an operation in flight on the devices the fault concerns,
        and returns them."""
        if kind == "device":
            affected = {victim}
        elif kind == "analyst":
            service = self.fleet[victim].service
            affected = {i for i, d in enumerate(self.fleet) if d.service == service}
        else:
            affected = set(range(len(self.fleet)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(self.pending(i) for i in affected):
                break
            time.sleep(0.005)
        return affected

    def hit(self, kind: str, victim: int) -> None:
        if kind == "bank":
            self.bank.kill()
            self.bank.start()
        elif kind == "mosquitto":
            mq = self.part(Mosquitto)
            mq.proc.kill()
            mq.proc.wait()
            mq.start()
        elif kind == "gateway":
            self.gateway.kill()
            self.gateway.wait()
            self.restart_gateway()
        elif kind == "analyst":
            name = next(a for a, s in demo.ANALYSTS.items() if self.fleet[victim].service in s)
            proc = next(p for p in self.parts(AnalystProcess) if p.workdir.name == name)
            proc.kill()
            proc.start()
        elif kind == "device":
            self.fleet[victim].sim.kill()
            self.fleet[victim].sim.start()
        elif kind == "bank-outage":  # longer than a device waits: none of its coins may be paid
            self.bank.kill()
            time.sleep(self.outage_s)  # the fault itself: the bank down this long
            self.bank.start()
        elif kind == "bank-stop":  # the same, frozen: calls already sent sit in its sockets
            assert self.bank.proc is not None
            os.kill(self.bank.proc.pid, signal.SIGSTOP)
            time.sleep(self.outage_s)
            os.kill(self.bank.proc.pid, signal.SIGCONT)
        elif kind == "gateway-stop":
            os.kill(self.gateway.pid, signal.SIGSTOP)
            time.sleep(self.stop_s)  # the fault itself: the process frozen this long
            os.kill(self.gateway.pid, signal.SIGCONT)
        else:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")

    # What the devices show.

    def pending(self, i: int) -> bool:
        try:
            return self.fleet[i].sim.state().pending_op is not None
        except (OSError, ValueError):
            return False

    def doubts(self) -> set[bytes]:
        return set().union(*(faults.doubt_ids(d.sim.flash_dir) for d in self.fleet))

    def settled(self) -> set[bytes]:
        return set().union(*(d.sim.settled() for d in self.fleet))

    def result_counts(self) -> list[int]:
        return [len(demo.RESULT.findall(d.sim.output().encode())) for d in self.fleet]

    def wait_results(self, devices: set[int], counts: list[int] | None = None, timeout: float = 60) -> bool:
        """True once each of ``devices`` has a result beyond ``counts`` (default: none yet)."""
        base = counts or [0] * len(self.fleet)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.result_counts()
            if all(now[i] > base[i] for i in devices):
                return True
            time.sleep(0.1)
        return False

    def parts_up(self) -> bool:
        """Every part alive and answering, as the faults left them."""
        bank_ok = self.bank.proc is not None and self.bank.proc.poll() is None and self.bank.admin.healthz()
        analysts = self.parts(AnalystProcess)
        try:
            url = f"http://127.0.0.1:{self.gateway_health()}/healthz"
            with urllib.request.urlopen(url, timeout=2) as r:
                gateway_ok = r.status == 200
        except OSError:
            gateway_ok = False
        mq = self.part(Mosquitto)
        return bool(
            bank_ok
            and all(a.healthy() for a in analysts)
            and gateway_ok
            and mq.proc.poll() is None
            and all(d.sim.running for d in self.fleet)
        )

    def quiesce(self) -> None:
        """Stops each device between two operations, so the end of the run cuts none."""
        for i, dev in enumerate(self.fleet):
            deadline = time.monotonic() + 10
            while self.pending(i) and time.monotonic() < deadline:
                time.sleep(0.002)
            dev.sim.stop()

    def summary(
        self, elapsed: float, credits: dict[str, int], audit_ok: bool, audit_text: str
    ) -> dict[str, Any]:
        self.count()
        return {
            **self.results,
            "audit_ok": audit_ok,
            "audit": "" if audit_ok else audit_text[-2000:],
            "ops_ok": sum(d.ok for d in self.fleet),
            "seconds": round(elapsed, 1),
        }


SHORT = ("bank", "gateway", "device", "gateway-stop")


def run_all(
    workdir: Path,
    runs: int,
    devices: int,
    kinds: tuple[str, ...],
    stop_s: float,
    seed: int,
    outage_s: float = 25.0,
) -> list[dict[str, Any]]:
    out = []
    for n in range(runs):
        wd = workdir / f"run-{n + 1}"
        shutil.rmtree(wd, ignore_errors=True)
        wd.mkdir(parents=True)
        fr = FaultRun(
            wd, devices, ops=100_000, heap="72K", runtime="auto", quiet=True, batch_seconds=1.0,
            kinds=kinds, stop_s=stop_s, outage_s=outage_s, seed=seed + n,
        )  # fmt: skip
        out.append(fr.run())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ecoin.sim.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2, help="runs of the whole campaign (default 2)")
    p.add_argument("--devices", type=int, default=5, help="simulated devices (default 5)")
    p.add_argument("--short", action="store_true", help="the short campaign of `make test`")
    p.add_argument("--faults", help=f"comma-separated faults (default all: {','.join(KINDS)})")
    p.add_argument("--stop-seconds", type=float, default=None, help="gateway SIGSTOP length (20; 5 short)")
    p.add_argument("--outage-seconds", type=float, default=25.0, help="bank-outage/bank-stop length (25)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default="build/faults", help="where runs and the table go")
    args = p.parse_args(argv)
    kinds = tuple(args.faults.split(",")) if args.faults else SHORT if args.short else KINDS
    if bad := [k for k in kinds if k not in KINDS]:
        p.error(f"unknown faults {', '.join(bad)}; known: {', '.join(KINDS)}")
    stop_s = args.stop_seconds if args.stop_seconds is not None else 5.0 if args.short else 20.0
    workdir = Path(args.workdir).resolve()
    signal.signal(signal.SIGTERM, demo._interrupt)
    try:
        runs = run_all(workdir, args.runs, args.devices, kinds, stop_s, args.seed, args.outage_seconds)
    except KeyboardInterrupt:
        print("faults: interrupted; everything started has been stopped")
        return 130
    report = faults.write(workdir, runs)
    print((workdir / "faults.md").read_text())
    c = report["checks"]
    ok = c["all_recovered"] and c["coins_conserved"] and c["audit_ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

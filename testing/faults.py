"""What a fault run measures, and its table: the bank's ledger against the devices' flash.

The runner (``ecoin.sim.faults``) injects the faults; this module holds what does not need
the simulator: one ``Fault`` record per injection, the reconciliation of every device's
coin store with the bank's answers (``POST /v1/claims`` with ``refund: false``, the path
``ecoin-provision refund`` takes, so nothing is refunded while measuring), and the table
written to ``build/faults/`` as markdown and JSON.

A coin "paid without a result delivered" is a coin in doubt on its device (the device saw
no verified RESULT) that the bank reports "redeemed": an analyst was paid for an answer the
device never got. Coins are conserved when every coin a device used is either redeemed or
in doubt, every unused coin is still outstanding, and the analysts' earnings equal the
coins the bank reports redeemed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecoin.common.bank_client import BankClient
from ecoin.tools.provisioning import flash


@dataclass
class Fault:
    """One injection: which part, how, and what it cost."""

    kind: str  # bank, mosquitto, gateway, analyst, device, gateway-stop
    at: float  # seconds since the start of the run
    recovered: bool = False
    recovery_s: float | None = None  # injection until every affected device has a new result
    doubts: set[bytes] = field(default_factory=set)  # op_ids put in doubt in its window, still open
    paid_without_result: int = 0
    late_results: int = 0  # doubts its window settled: a RESULT came after the device gave up


@dataclass
class Reconciliation:
    """The end of a run: the fleet's coins as the bank sees them."""

    redeemed_in_doubt: set[bytes] = field(default_factory=set)  # op_ids
    problems: list[str] = field(default_factory=list)
    redeemed: int = 0
    credits: int = 0

    @property
    def conserved(self) -> bool:
        return not self.problems


def doubt_ids(flash_dir: Path) -> set[bytes]:
    """The op_ids of a device's open in-doubt records (an operation a kill cut is one from the
    device's next boot on; one a late RESULT settled is not: the device got its answer)."""
    return {d.op_id for d in flash.read_in_doubt(flash_dir)} - flash.read_settled(flash_dir)


def reconcile(owner: BankClient, devices: dict[str, Path], credits: int) -> Reconciliation:
    """Asks the bank about every coin of every (stopped) device and checks conservation."""
    out = Reconciliation(credits=credits)
    for name, flash_dir in devices.items():
        state = flash.read_state(flash_dir)
        coins = flash.read_coins(flash_dir, state)
        settled = flash.read_settled(flash_dir)  # answered late: spent, like an on-time result
        in_doubt = {d.coin: d.op_id for d in flash.read_in_doubt(flash_dir) if d.op_id not in settled}
        if state.pending_coin and state.pending_op:
            in_doubt.setdefault(state.pending_coin, state.pending_op)
        answers = owner.claim(name, coins, refund=False)
        for i, (coin, answer) in enumerate(zip(coins, answers, strict=True)):
            st = answer["state"]
            out.redeemed += st == "redeemed"
            if coin in in_doubt:
                if st == "redeemed":
                    out.redeemed_in_doubt.add(in_doubt[coin])
                elif st != "outstanding":
                    out.problems.append(f"{name}: coin {i} in doubt is {st}")
            elif i < state.next and st != "redeemed":
                out.problems.append(f"{name}: coin {i} was used, no doubt recorded, but the bank says {st}")
            elif i >= state.next and st != "outstanding":
                out.problems.append(f"{name}: unused coin {i} is {st} at the bank")
    if out.redeemed != credits:
        out.problems.append(f"analysts earned {credits} but the bank reports {out.redeemed} coins redeemed")
    return out


def attribute(faults: list[Fault], rec: Reconciliation) -> int:
    """Counts each redeemed in-doubt coin against the fault in whose window it went in
    doubt; returns those that belong to no fault."""
    unowned = set(rec.redeemed_in_doubt)
    for f in faults:
        f.paid_without_result = len(f.doubts & rec.redeemed_in_doubt)
        unowned -= f.doubts
    return len(unowned)


def table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fault kind over every run."""
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        for f in run["faults"]:
            row = rows.setdefault(
                f["kind"],
                {"fault": f["kind"], "injections": 0, "recovered": True, "recovery_s": [], "ops_lost": 0,
                 "late_results": 0, "paid_without_result": 0},
            )  # fmt: skip
            row["injections"] += 1
            row["recovered"] = row["recovered"] and f["recovered"]
            if f["recovery_s"] is not None:
                row["recovery_s"].append(f["recovery_s"])
            row["ops_lost"] += f["ops_lost"]
            row["late_results"] += f.get("late_results", 0)
            row["paid_without_result"] += f["paid_without_result"]
    for row in rows.values():
        times = row.pop("recovery_s")
        row["recovery_s_max"] = round(max(times), 1) if times else None
        row["recovery_s_mean"] = round(sum(times) / len(times), 1) if times else None
    return list(rows.values())


def fault_dict(f: Fault) -> dict[str, Any]:
    d = asdict(f)
    d.pop("doubts")
    d["ops_lost"] = len(f.doubts)
    d["at"] = round(f.at, 1)
    d["recovery_s"] = None if f.recovery_s is None else round(f.recovery_s, 1)
    return d


def write(out_dir: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``faults.json`` (every run and the table) and ``faults.md`` (the table) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table(runs)
    checks = {
        "runs": len(runs),
        "all_recovered": all(r["recovered"] for r in rows) and all(run["parts_up"] for run in runs),
        "coins_conserved": all(run["coins_conserved"] for run in runs),
        "audit_ok": all(run["audit_ok"] for run in runs),
        "paid_without_result_outside_faults": sum(run["paid_outside_faults"] for run in runs),
    }
    report = {"checks": checks, "table": rows, "runs": runs}
    (out_dir / "faults.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| fault | injections | recovered | recovery s (max / mean) | ops lost"
        " | late results | coins paid without a result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = f"{r['recovery_s_max']} / {r['recovery_s_mean']}" if r["recovery_s_max"] is not None else "-"
        lines.append(
            f"| {r['fault']} | {r['injections']} | {'yes' if r['recovered'] else 'NO'} | {rec} "
            f"| {r['ops_lost']} | {r['late_results']} | {r['paid_without_result']} |"
        )
    lines.append("")
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in checks.items()]
    for i, run in enumerate(runs, 1):
        lines += [f"- run {i} problems: {p}" for p in run["problems"]]
    (out_dir / "faults.md").write_text("\n".join(lines) + "\n")
    return report

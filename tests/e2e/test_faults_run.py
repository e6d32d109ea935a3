"""The short fault run of `make test` (`make faults` is the full one): the whole system under
kill -9 of the bank, the gateway and a device mid-operation, and a 5 s SIGSTOP of the
gateway. Every part must come back, no coin may be created or lost, the ledger must audit,
and no analyst may be paid for an answer its device never got, except for the operation
cut by killing the device itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_the_short_fault_run_recovers_and_conserves_coins(tmp_path: Path):
    out = tmp_path / "faults"
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.sim.faults", "--short", "--runs", "1", "--devices", "3"]
        + ["--workdir", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    assert (out / "faults.md").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "faults.json").read_text())
    checks, rows = report["checks"], {r["fault"]: r for r in report["table"]}
    assert set(rows) == {"bank", "gateway", "device", "gateway-stop"}
    assert checks["all_recovered"], report
    assert checks["coins_conserved"], report["runs"][0]["problems"]
    assert checks["audit_ok"], report["runs"][0]["audit"]
    assert checks["paid_without_result_outside_faults"] == 0, report
    paid = {kind: r["paid_without_result"] for kind, r in rows.items() if kind != "device"}
    assert paid == dict.fromkeys(paid, 0), report
    assert rows["device"]["paid_without_result"] <= rows["device"]["injections"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_bank_outage_longer_than_a_device_waits_pays_for_no_lost_answer(tmp_path: Path):
    """25 s with the bank down, then 25 s with it frozen (calls already sent sit in its
    sockets), each longer than a device's 20 s: the operations cut fail and their coins stay
    refundable; none is redeemed after its device gave up (a spend committed just before the
    kill is paid before); everything recovers."""
    out = tmp_path / "faults"
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.sim.faults", "--faults", "bank-outage,bank-stop", "--runs", "1"]
        + ["--devices", "2", "--workdir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert (out / "faults.md").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "faults.json").read_text())
    checks, rows = report["checks"], {r["fault"]: r for r in report["table"]}
    assert set(rows) == {"bank-outage", "bank-stop"}
    assert checks["all_recovered"] and checks["coins_conserved"] and checks["audit_ok"], report
    # Frozen, the bank answers every call once it resumes, and refuses those past not_after.
    assert rows["bank-stop"]["paid_without_result"] == 0, report
    # Killed, it may have committed a spend whose answer dies with it: that one was paid
    # before the device gave up, not after; at most the operations in flight (2 devices).
    assert rows["bank-outage"]["paid_without_result"] <= 2, report
    assert checks["paid_without_result_outside_faults"] == 0, report
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

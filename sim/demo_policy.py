"""The demo's owner policy and statement (issue 16): one more simulated device buys
``stats`` while its owner's policy allows ``average`` only. Its one operation is refused by
the bank before anything is spent; the analyst learns the rule (its log says
``refused:policy_service``), the device gets the generic ERROR and puts the coin in doubt,
and the owner's refund claim returns the coin. At the end the owner's statement is printed.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecoin.common.bank_client import BankClient
from ecoin.sim.device import SimDevice
from ecoin.tools.provisioning.refund import claim_refunds

DEVICE = "dev-policy"
SERVICE = "stats"
POLICY = {"services": ["average"]}
CODE = "policy_service"


def set_policy(say: Callable[[str], None], owner: BankClient) -> None:
    owner.set_policy(POLICY, DEVICE)
    say(f"owner policy of {DEVICE}: {POLICY} (the device buys {SERVICE}: the bank will refuse)")


def show_refusal(say: Callable[[str], None], sim: SimDevice, owner: BankClient, analysts: Path) -> bool:
    """Waits for the device's one operation, then prints what each party saw. True when the
    analyst was told the rule, the device only failed, and the claim refunded the coin."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        sim.wait(60.0)
    sim.stop()
    device_failed = "failed (" in sim.output()
    told = any(CODE in p.read_text(errors="replace") for p in analysts.glob("*/analyst.log"))
    report = claim_refunds(owner, DEVICE, flash_dir=sim.flash_dir)
    refunded = [c for c in report.claims if c.state == "refunded"]
    say(
        f"policy refusal: the analyst was told {CODE if told else '(nothing)'}; the device {DEVICE} got "
        f"{'the generic ERROR (coin in doubt)' if device_failed else 'no failure'}; the owner's claim "
        f"refunded {len(refunded)} coin(s)"
    )
    return told and device_failed and len(refunded) == 1


def statement_lines(s: dict[str, Any]) -> list[str]:
    def items(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    return [
        f"  owner statement ({s['owner']}, {s['from']} to {s['to']}): bought {s['bought']},"
        f" spent {s['spent']}, refunded {s['refunded']}, expired {s['expired']},"
        f" outstanding (unused or in doubt) {s['outstanding']}, balance {s['balance']}",
        f"    spent by service: {items(s['spent_by_service'])}",
        f"    spent by analyst: {items(s['spent_by_analyst'])}",
        f"    spent by device:  {items(s['spent_by_device'])}",
    ]

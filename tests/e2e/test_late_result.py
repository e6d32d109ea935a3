"""A gateway frozen (SIGSTOP) for longer than its device waits, just after it forwarded an
operation, with the whole system real: Mosquitto from the generated configuration, the bank,
the analysts, the gateway process and a device running the firmware on MicroPython.

The analyst redeems the operation in time and answers; the answer waits at the broker for the
frozen gateway, and the device gives up (timeout, coin in doubt). Before issue 18's fix the
owner's claim then said "redeemed": paid, no result. Now the gateway, once resumed, relays the
late RESULT, the device verifies it under the keys of the coin it holds in doubt, prints it as
late and settles that doubt: the claim lists nothing for it."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from ecoin.sim import demo
from ecoin.sim.faults import FaultRun
from ecoin.testing.bank import BankProcess
from ecoin.testing.metrics import parse
from ecoin.testing.servers import wait_until
from ecoin.tools.provisioning.refund import claim_refunds

from .conftest import LATE_OP_TIMEOUT, run_late_scenario


class LateResult(FaultRun):
    """The demo's stack with one device; watch() runs the scenario instead of the campaign."""

    def forwarded(self) -> float:
        url = f"http://127.0.0.1:{self.gateway_health()}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return parse(r.read().decode()).get("ecoin_gateway_forwarded_total", 0.0)

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        dev = self.fleet[0]
        assert self.wait_results({0}, timeout=60), dev.sim.output()[-2000:]
        assert bank.proc is not None
        # The policy device's one operation out of the way: the operation forwarded below
        # must be this device's (a run once froze the gateway on the other's).
        refused = self.refused
        assert refused is None or refused.sim.wait_for("collector done", 60), refused.sim.output()[-2000:]
        # The bank frozen first, so no answer can come before the gateway is frozen too.
        os.kill(bank.proc.pid, signal.SIGSTOP)
        try:
            before = self.forwarded()
            wait_until(lambda: self.forwarded() > before, 3 * LATE_OP_TIMEOUT, "an operation forwarded")
            os.kill(self.gateway.pid, signal.SIGSTOP)
            frozen = time.monotonic()
        finally:
            os.kill(bank.proc.pid, signal.SIGCONT)
        try:
            op_id = dev.sim.state().pending_op
            assert op_id is not None, "the forwarded operation is the one the device waits for"
            short = op_id[:4].hex()
            gave_up = f"collector: op {short} failed (timeout)"
            assert dev.sim.wait_for(gave_up, 2 * LATE_OP_TIMEOUT), dev.sim.output()[-3000:]
            wait_until(
                lambda: time.monotonic() - frozen > LATE_OP_TIMEOUT + 3, 30, "a freeze past the deadline"
            )
        finally:
            os.kill(self.gateway.pid, signal.SIGCONT)
        assert dev.sim.wait_for(f"collector: op {short} late result {{", 15), dev.sim.output()[-3000:]
        assert op_id in dev.sim.settled()
        (coin,) = [d.coin for d in dev.sim.in_doubt() if d.op_id == op_id]
        with bank.client("owner", demo.OWNER) as owner:
            assert owner.claim(dev.name, [coin], refund=False)[0]["state"] == "redeemed"  # it was paid
            report = claim_refunds(owner, dev.name, flash_dir=dev.sim.flash_dir, refund=False)
        assert op_id.hex() not in {c.op_id for c in report.claims}  # nothing to refund for it
        assert self.wait_results({0}, self.result_counts(), timeout=30)  # and it goes on
        self.results = {"late": short}


def test_a_result_delayed_by_a_frozen_gateway_settles_the_devices_doubt(tmp_path: Path) -> None:
    run_late_scenario(LateResult, tmp_path)

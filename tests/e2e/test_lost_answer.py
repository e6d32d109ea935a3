"""The bank's answer to a redemption lost after its commit (a bank killed at that moment),
with the whole system real: Mosquitto from the generated configuration, the bank, the
analysts, the gateway process and a device running the firmware on MicroPython; between
alice and the bank, a relay that passes her calls on and, while ``lost``, drops the answers.

The device is told FAILED at its deadline (the analyst could not know the coin was paid)
and puts the coin in doubt. Once the bank answers again, the analyst asks for the header
with ``repeat`` (spending nothing), learns it was paid, and sends the RESULT; the gateway
relays it late and the device verifies it and settles the doubt: the coin was paid, and the
device got what it paid for. Before this, the owner's claim showed it "redeemed", no result."""

from __future__ import annotations

import re
from pathlib import Path

from ecoin.sim import demo
from ecoin.sim.faults import FaultRun
from ecoin.testing.bank import BankProcess
from ecoin.testing.faulty_bank import FaultyBank
from ecoin.testing.servers import wait_until
from ecoin.tools.provisioning.refund import claim_refunds

from .conftest import LATE_OP_TIMEOUT, run_late_scenario

FAILED = re.compile(r"collector: op ([0-9a-f]{8}) failed \(error \d+\)")


class LostAnswer(FaultRun):
    """The demo's stack with one device (it buys alice's service); watch() runs the scenario."""

    faulty: FaultyBank | None = None

    def analyst_bank(self, analyst: str, bank: BankProcess, pki_dir: Path) -> str:
        if analyst != "alice":
            return bank.url
        self.faulty = FaultyBank(pki_dir, bank.url, ("analyst", analyst), self.workdir / "faulty").start()
        self.stack.callback(self.faulty.close)
        return self.faulty.url

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        dev, faulty = self.fleet[0], self.faulty
        assert faulty is not None
        assert self.wait_results({0}, timeout=60), dev.sim.output()[-2000:]
        faulty.mode = "lost"
        wait_until(
            lambda: FAILED.search(dev.sim.output()), 3 * LATE_OP_TIMEOUT, "an operation answered FAILED"
        )
        faulty.mode = "relay"
        failed = FAILED.findall(dev.sim.output())
        for short in failed:
            late = f"collector: op {short} late result {{"
            assert dev.sim.wait_for(late, 30), dev.sim.output()[-3000:]
        lost = [d for d in dev.sim.in_doubt() if d.op_id[:4].hex() in failed]
        assert lost and all(d.op_id in dev.sim.settled() for d in lost)
        with bank.client("owner", demo.OWNER) as owner:
            states = [r["state"] for r in owner.claim(dev.name, [d.coin for d in lost], refund=False)]
            report = claim_refunds(owner, dev.name, flash_dir=dev.sim.flash_dir, refund=False)
        assert states == ["redeemed"] * len(lost)  # paid, and answered after all
        assert not {d.op_id.hex() for d in lost} & {c.op_id for c in report.claims}
        assert self.wait_results({0}, self.result_counts(), timeout=30)  # and it goes on
        self.results = {"late": ",".join(failed)}


def test_a_payment_whose_answer_was_lost_still_reaches_its_device(tmp_path: Path) -> None:
    run_late_scenario(LostAnswer, tmp_path)

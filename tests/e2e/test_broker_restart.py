"""Issue 18: after a broker restart the devices' next operations succeed within a few
seconds of the broker being back, not after their query timeout. The whole stack of
``make demo`` (Mosquitto with the generated configuration, the bank, two analysts, the
gateway, devices running the real firmware on the MicroPython unix port); Mosquitto is
killed (-9) and started again on the same ports while the devices are between operations,
so that a QUERY may be lost with the old connection or reach the new broker before the
gateway has subscribed again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ecoin.sim.faults import FaultRun
from ecoin.testing.bank import BankProcess
from ecoin.testing.servers import Mosquitto

BOUND_S = 5.0  # issue 18: the next operation succeeds within 5 s of the broker being back


class BrokerRestart(FaultRun):
    """Restarts the broker after each of ``outages``; ``results["recovery_s"]`` holds, per restart,
    the seconds from the broker accepting connections again to the last device's next
    verified result (None: not within 30 s)."""

    outages: tuple[float, ...] = (2.5, 4.0, 6.0)  # seconds the broker stays down (issue 18's)

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        self.bank = bank
        everyone = set(range(len(self.fleet)))
        assert self.wait_results(everyone, timeout=60), "no device got a first result"
        recovery: list[float | None] = []
        mq = self.part(Mosquitto)
        for outage in self.outages:
            self.between_operations()
            counts = self.result_counts()
            mq.proc.kill()
            mq.proc.wait()
            time.sleep(outage)  # the fault itself: the broker is down this long
            mq.start()  # returns once the broker accepts connections
            back = time.monotonic()
            ok = self.wait_results(everyone, counts, timeout=30)
            recovery.append(round(time.monotonic() - back, 2) if ok else None)
            self.say(f"broker back; next results after {recovery[-1]} s")
        self.quiesce()
        self.results = {"recovery_s": recovery}

    def between_operations(self) -> None:
        """Waits until no device has a coin in flight (a QUERY may be)."""
        deadline = time.monotonic() + 10
        while any(self.pending(i) for i in range(len(self.fleet))) and time.monotonic() < deadline:
            time.sleep(0.002)


def test_after_a_broker_restart_the_next_operation_succeeds_within_5_s(tmp_path: Path) -> None:
    run = BrokerRestart(
        tmp_path, 2, ops=100_000, heap="72K", runtime="micropython", quiet=True, batch_seconds=1.0
    )
    summary: dict[str, Any] = run.run()
    recovery = summary["recovery_s"]
    assert all(s is not None and s <= BOUND_S for s in recovery), recovery
    assert summary["audit_ok"], summary["audit"]

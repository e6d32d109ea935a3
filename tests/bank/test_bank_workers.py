"""The worker pool with real processes: a newcomer's chunk passes a flooder's message of
several chunks instead of waiting for the end of it (the pool's yield, workers.py)."""

from __future__ import annotations

import threading

from ecoin.bank.fair import FairQueue
from ecoin.bank.workers import GROUP, WorkerPool
from ecoin.testing.bank import no_init, slow_job
from ecoin.testing.servers import wait_until

JOB_S = 0.05  # one job's work: long enough that the order shows, short enough to be quick


def test_a_newcomer_passes_a_flooders_message_of_several_chunks() -> None:
    fair: FairQueue[tuple[str, float], str] = FairQueue()
    pool = WorkerPool(1, fair, no_init, (), slow_job)
    try:
        flood = 4 * GROUP  # alone, bob's jobs go to the worker GROUP per message
        out: dict[str, list[str]] = {}
        jobs = [(f"bob{i}", JOB_S) for i in range(flood)]
        bob = threading.Thread(target=lambda: out.update(bob=fair.run("bob", jobs)))
        bob.start()
        wait_until(lambda: fair.in_flight("bob") >= 2 * GROUP, what="two of bob's messages at the worker")
        assert fair.run("carol", [("carol", 0.0)]) == ["carol"]
        ran = flood - fair.waiting - fair.in_flight("bob")
        # without the yield carol waits for both of bob's messages (2 * GROUP jobs)
        assert ran < GROUP, f"carol waited for {ran} of bob's jobs"
        bob.join(30)
        assert out["bob"] == [j[0] for j in jobs]  # what was given back ran later, all of it
    finally:
        pool.close()

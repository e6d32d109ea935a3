"""The fair queue's order, with the test as the workers: it takes each job and says when
it is done, so which job comes next is decided by the queue alone, never by timing (the
latency this buys is measured by ``bank_fairness_ratio`` in ``make bench``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ecoin.bank.fair import Closed, FairQueue
from ecoin.testing.servers import wait_until

Queue = FairQueue[tuple[str, int], str]


def submit(fair: Queue, caller: str, n: int, out: dict[str, Any] | None = None) -> threading.Thread:
    """``caller`` runs n jobs in a thread of its own (``run`` blocks); its results, or its
    exception, land in ``out[caller]``."""
    before = fair.waiting

    def run() -> None:
        try:
            result: Any = fair.run(caller, [(caller, i) for i in range(n)])
        except Exception as exc:
            result = exc
        if out is not None:
            out[caller] = result

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: fair.waiting == before + n, what=f"{caller}'s jobs queued")
    return t


def finish(fair: Queue, task: Any) -> None:
    fair.done(task, f"{task.job[0]}{task.job[1]}")


def test_a_newcomer_is_served_before_the_flooders_next_chunk() -> None:
    fair: Queue = FairQueue()
    submit(fair, "bob", 20)
    running = [fair.take() for _ in range(3)]  # three workers, all on bob's chunks
    submit(fair, "alice", 1)
    finish(fair, running.pop(0))
    task = fair.take()
    assert task is not None and task.job == ("alice", 0)  # not bob's fourth chunk first


def test_two_backlogged_callers_alternate_and_get_their_results_in_order() -> None:
    fair: Queue = FairQueue()
    out: dict[str, Any] = {}
    threads = [submit(fair, "a", 4, out), submit(fair, "b", 4, out)]
    order = []
    for _ in range(8):  # one worker
        task = fair.take()
        assert task is not None
        order.append(task.caller)
        finish(fair, task)
    for t in threads:
        t.join(5)
    assert order == ["a", "b"] * 4
    assert out == {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2", "b3"]}


def test_parallel_requests_of_one_caller_do_not_buy_it_more_workers() -> None:
    """Carol's four one-chunk requests against bob's backlog, on two workers: a freed
    worker goes to whoever has fewer chunks running."""
    fair: Queue = FairQueue()
    submit(fair, "bob", 10)
    bob = [fair.take(), fair.take()]
    for _ in range(4):
        submit(fair, "carol", 1)
    finish(fair, bob.pop(0))
    carol = fair.take()
    assert carol is not None and carol.caller == "carol"
    assert fair.in_flight("carol") == 1 and fair.in_flight("bob") == 1
    finish(fair, carol)  # carol 0 against bob's 1: carol again
    carol = fair.take()
    assert carol is not None and carol.caller == "carol"
    finish(fair, bob.pop(0))  # bob 0 against carol's 1: bob now
    task = fair.take()
    assert task is not None and task.caller == "bob"


def test_a_failed_job_fails_its_run_after_the_others_finish() -> None:
    fair: Queue = FairQueue()
    out: dict[str, Any] = {}
    t = submit(fair, "a", 2, out)
    first, second = fair.take(), fair.take()
    assert first is not None and second is not None
    fair.done(first, exc=RuntimeError("a worker died"))
    assert t.is_alive()  # the second job still runs
    finish(fair, second)
    t.join(5)
    assert isinstance(out["a"], RuntimeError)
    assert fair.in_flight("a") == 0 and fair.waiting == 0


def test_closing_fails_waiting_jobs_and_releases_the_workers() -> None:
    fair: Queue = FairQueue()
    out: dict[str, Any] = {}
    t = submit(fair, "a", 3, out)
    running = fair.take()
    taker_result: list[Any] = []
    fair.close()
    taker = threading.Thread(target=lambda: taker_result.append(fair.take()))
    taker.start()
    taker.join(5)
    assert taker_result == [None]
    assert running is not None
    finish(fair, running)
    t.join(5)
    assert isinstance(out["a"], Closed)
    with pytest.raises(Closed):
        fair.run("b", [("b", 0)])


def test_a_caller_alone_gets_several_chunks_at_once_and_one_each_when_others_wait() -> None:
    fair: Queue = FairQueue()
    submit(fair, "bob", 10)
    assert [t.job for t in fair.take_many(4)] == [("bob", i) for i in range(4)]
    submit(fair, "carol", 2)
    assert [t.job for t in fair.take_many(4)] == [("carol", 0)]  # fewest in flight, and not alone
    assert [t.job for t in fair.take_many(4)] == [("carol", 1)]
    assert len(fair.take_many(4)) == 4  # bob is alone again


def test_a_newcomer_calls_contended_and_jobs_given_back_are_first_in_line() -> None:
    fair: Queue = FairQueue()
    calls: list[int] = []
    fair.on_contended(lambda: calls.append(1))
    submit(fair, "bob", 6)
    assert calls == []  # nobody else was in the workers
    group = fair.take_many(4)
    submit(fair, "bob", 1)  # more of a caller already served: not a newcomer
    assert calls == []
    submit(fair, "carol", 1)
    assert calls == [1]
    assert fair.in_flight("bob") == 4
    fair.requeue(group[2:])  # the worker finished two and gave two back
    assert fair.in_flight("bob") == 2
    assert fair.take().job == ("carol", 0)  # type: ignore[union-attr]
    assert [t.job for t in fair.take_many(8)] == [("bob", 2), ("bob", 3), ("bob", 4), ("bob", 5), ("bob", 0)]

"""A fair queue in front of the RSA worker processes.

Every caller's batch is cut into chunks of a few headers; the chunks wait in one queue
per caller. Each worker's thread (``workers.py``) takes the next chunk when its worker is
free, from the waiting caller with the fewest chunks in the workers (among equals, the
one served longest ago, a newcomer first). A caller flooding the bank with 256-header
batches of junk (each header costs a private-key operation before it can be called junk)
then waits behind its own chunks, while another caller's one header is the next chunk
the first free worker takes: the work costs the sender, not everyone. Measured by ``bank_fairness_ratio``
(bench/bench_bank.py).

A caller alone in the queue gets several chunks per ``take_many`` (fewer round trips to
the workers: measured 5 % of the bank's CPU at chunks of 4), and a caller arriving while
others hold the workers calls ``contended``: the pool then has its workers give back the
chunks they have not started (``requeue``), so the newcomer still waits for one chunk at
most.

Why "fewest in flight" and not plain turns: a caller that arrives while the flooder holds
every worker must not wait for the flooder's next turn first (a turn order puts the
newcomer after the flooder, who was served last but is also next), and a caller with
many small requests in parallel must not get a turn per request.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Closed(RuntimeError):
    """The queue was closed (the bank is stopping) before the job ran."""


@dataclass
class _Batch:
    """One ``run`` call: its results, and the event its caller waits on."""

    left: int
    results: list[Any]
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Task(Generic[T]):
    caller: str
    job: T
    batch: _Batch
    index: int


class FairQueue(Generic[T, R]):
    def __init__(self) -> None:
        self._contended: Callable[[], None] | None = None
        self._queues: dict[str, deque[Task[T]]] = {}
        self._running: Counter[str] = Counter()  # chunks in the workers, per caller
        self._served: dict[str, int] = {}  # when each active caller was last served
        self._turn = 0
        self._closed = False
        self._cond = threading.Condition()

    def run(self, caller: str, jobs: list[T]) -> list[R]:
        """Runs ``jobs`` for ``caller`` in their turn; blocks until all are done. The
        first job that failed raises here, after all have finished."""
        if not jobs:
            return []
        batch = _Batch(len(jobs), [None] * len(jobs))
        with self._cond:
            if self._closed:
                raise Closed("the bank is stopping")
            newcomer = bool(self._running) and caller not in self._running and caller not in self._queues
            queue = self._queues.setdefault(caller, deque())
            queue.extend(Task(caller, job, batch, i) for i, job in enumerate(jobs))
            self._cond.notify(len(jobs))
        if newcomer and self._contended is not None:
            self._contended()
        batch.finished.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results

    def on_contended(self, call: Callable[[], None]) -> None:
        """``call()`` whenever a caller arrives while others' jobs are in the workers."""
        self._contended = call

    def take(self, wait: bool = True) -> Task[T] | None:
        """For a worker's thread: the fairest waiting job (``done`` must follow); blocks
        until one waits, unless ``wait`` is false; None once the queue is closed."""
        tasks = self.take_many(1, wait)
        return tasks[0] if tasks else None

    def take_many(self, most: int, wait: bool = True) -> list[Task[T]]:
        """Like ``take``, but up to ``most`` jobs of the fairest caller while nobody else
        waits (one job otherwise); empty where ``take`` gives None."""
        with self._cond:
            while not self._queues and not self._closed:
                if not wait:
                    return []
                self._cond.wait()
            if self._closed:
                return []
            caller = min(self._queues, key=lambda c: (self._running[c], self._served.get(c, -1)))
            queue = self._queues[caller]
            n = min(len(queue), most if len(self._queues) == 1 else 1)
            tasks = [queue.popleft() for _ in range(n)]
            if not queue:
                del self._queues[caller]
            self._running[caller] += n
            self._turn += 1
            self._served[caller] = self._turn
            return tasks

    def requeue(self, tasks: list[Task[T]]) -> None:
        """Jobs taken but not started (a worker gave them back to let a newcomer pass):
        first in their caller's line again."""
        with self._cond:
            for task in reversed(tasks):
                self._running[task.caller] -= 1
                if self._running[task.caller] <= 0:
                    del self._running[task.caller]
                if not self._closed:
                    self._queues.setdefault(task.caller, deque()).appendleft(task)
            self._cond.notify(len(tasks))
            ended = _fail_closed(tasks) if self._closed else []
        for batch in ended:
            batch.finished.set()

    def done(self, task: Task[T], result: R | None = None, exc: BaseException | None = None) -> None:
        with self._cond:
            self._running[task.caller] -= 1
            if self._running[task.caller] <= 0:
                del self._running[task.caller]
                if task.caller not in self._queues:
                    del self._served[task.caller]  # idle: it owes nobody a turn
            last = _settle(task.batch, task.index, result, exc)
        if last:
            task.batch.finished.set()

    def close(self) -> None:
        """Wakes every worker's thread to leave; jobs still waiting fail with Closed."""
        with self._cond:
            self._closed = True
            left = [t for q in self._queues.values() for t in q]
            self._queues.clear()
            self._cond.notify_all()
            ended = _fail_closed(left)
        for batch in ended:
            batch.finished.set()

    @property
    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def in_flight(self, caller: str) -> int:
        with self._cond:
            return self._running[caller]


def _settle(batch: _Batch, index: int, result: Any, exc: BaseException | None) -> bool:
    """Under the queue's lock: records one job's outcome; True when it was the last."""
    if exc is not None and batch.error is None:
        batch.error = exc
    batch.results[index] = result
    batch.left -= 1
    return batch.left == 0


def _fail_closed(tasks: list[Task[Any]]) -> list[_Batch]:
    """Under the queue's lock: fails jobs that will never run; the batches they ended."""
    return [t.batch for t in tasks if _settle(t.batch, t.index, None, Closed("the bank is stopping"))]

"""A fair queue in front of the RSA worker processes.

Every caller's batch is cut into chunks of a few headers; the chunks wait in one queue
per caller, and the callers are served in turn, one chunk each, with never more chunks
in the workers than there are workers plus one (the one queued keeps every worker busy
between two chunks). A caller flooding the bank with 256-header batches of junk (each
header costs a private-key operation before it can be called junk) then waits behind its
own chunks, while another caller's one header waits for at most the chunks already
started: the work costs the sender, not everyone. Measured by ``bank_fairness_ratio``
(bench/bench_bank.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class FairQueue(Generic[T, R]):
    def __init__(self, submit: Callable[[T], Future[R]], slots: int) -> None:
        if slots < 1:
            raise ValueError("a fair queue needs at least one slot")
        self._submit = submit
        self.slots = slots
        self._queues: OrderedDict[str, deque[tuple[T, Future[R]]]] = OrderedDict()
        self._in_flight = 0
        self._lock = threading.Lock()

    def run(self, caller: str, jobs: list[T]) -> list[R]:
        """Runs ``jobs`` for ``caller`` in their turn; blocks until all are done."""
        outs: list[Future[R]] = [Future() for _ in jobs]
        with self._lock:
            self._queues.setdefault(caller, deque()).extend(zip(jobs, outs, strict=True))
        self._pump()
        return [f.result() for f in outs]

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def _pump(self) -> None:
        """Starts the next chunks, one per caller in turn, while a slot is free."""
        while True:
            with self._lock:
                if self._in_flight >= self.slots or not self._queues:
                    return
                caller, queue = next(iter(self._queues.items()))
                job, out = queue.popleft()
                if queue:
                    self._queues.move_to_end(caller)  # its next chunk after everyone else's
                else:
                    del self._queues[caller]
                self._in_flight += 1
            try:
                fut = self._submit(job)
            except BaseException as exc:  # the pool is gone: this job fails, the next may not
                self._settle(out, None, exc)
                continue
            fut.add_done_callback(partial(self._done, out))

    def _done(self, out: Future[R], fut: Future[R]) -> None:
        exc = fut.exception()
        self._settle(out, None if exc else fut.result(), exc)

    def _settle(self, out: Future[R], result: R | None, exc: BaseException | None) -> None:
        with self._lock:
            self._in_flight -= 1
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(result)  # type: ignore[arg-type]
        self._pump()

"""The RSA worker processes, each driven over its own pipe by one thread of the bank.

Why not ``concurrent.futures.ProcessPoolExecutor``: the fair queue needs chunks of a few
headers (a newcomer waits for at most one chunk), and the executor's path for one chunk
(its manager and feeder threads, a shared result queue under a lock, three futures and
their callbacks) cost the bank's process ~0.8 ms of CPU per chunk: a fifth more CPU per
redemption than the RSA itself leaves room for (``bank_ab_cpu_new_vs_base``, make bench).
Here one thread per worker takes the next chunk from the fair queue when its worker is
free, sends it, and waits for the answer: one pickle each way and two thread wake-ups.
A worker busy only with our chunk also means the chunk chosen last is the one that runs
next: nothing queues in front of a newcomer.

A worker that dies (the OOM killer, say) is replaced by its thread, and the chunk it was
on is tried once more on the new one. A worker leaves when its pipe closes: when the bank
closes it, or when the bank itself is gone (even after SIGKILL).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .fair import FairQueue

READY_TIMEOUT_S = 60.0
Work = Callable[[Any], Any]


def _serve(
    conn: Connection, init: Callable[..., None], args: tuple[Any, ...], work: Callable[[Any], Any]
) -> None:
    """A worker's life: ``init(*args)`` once, then ``work`` on every job received."""
    init(*args)
    conn.send((True, None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer = (True, work(job))
        except Exception as exc:  # a bug in ``work``: the caller gets it, the worker lives on
            answer = (False, exc)
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return


class WorkerPool:
    """``count`` processes running ``work(job)`` for the jobs of ``fair``."""

    def __init__(
        self,
        count: int,
        fair: FairQueue[Any, Any],
        init: Callable[..., None],
        args: tuple[Any, ...],
        work: Work,
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # never fork a threaded server
        self._fair = fair
        self._target = (init, args, work)
        self._closed = False
        # Started together, then awaited: a key problem shows at start.
        started = [self._spawn() for _ in range(count)]
        self._workers = [self._ready(*w) for w in started]
        self._threads = [
            threading.Thread(target=self._drive, args=(k,), name=f"rsa-{k}", daemon=True)
            for k in range(count)
        ]
        for t in self._threads:
            t.start()

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        mine, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(theirs, *self._target), daemon=True)
        proc.start()
        theirs.close()  # ours is the only other end: its EOF says the worker is gone
        return proc, mine

    @staticmethod
    def _ready(proc: BaseProcess, conn: Connection) -> tuple[BaseProcess, Connection]:
        if not conn.poll(READY_TIMEOUT_S):
            proc.kill()
            raise BrokenProcessPool("a decryption worker did not start")
        try:
            conn.recv()
        except (EOFError, OSError):
            raise BrokenProcessPool(f"a decryption worker exited at start ({proc.exitcode})") from None
        return proc, conn

    def _drive(self, k: int) -> None:
        while True:
            task = self._fair.take()
            if task is None:  # closed
                return
            try:
                result = self._call(k, task.job)
            except BaseException as exc:
                self._fair.done(task, exc=exc)
            else:
                self._fair.done(task, result)

    def _call(self, k: int, job: Any) -> Any:
        for attempt in (1, 2):
            proc, conn = self._workers[k]
            try:
                conn.send(job)
                ok, value = conn.recv()
            except (EOFError, OSError):
                conn.close()
                proc.join(5)
                if attempt == 2 or self._closed:
                    raise BrokenProcessPool("a decryption worker died") from None
                self._workers[k] = self._ready(*self._spawn())
                continue
            if not ok:
                raise value
            return value
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        self._fair.close()
        for t in self._threads:
            t.join(10)
        for proc, conn in self._workers:
            conn.close()
            proc.join(5)
            if proc.is_alive():
                proc.kill()

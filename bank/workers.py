"""The RSA worker processes, each driven over its own pipe by one thread of the bank.

Why not ``concurrent.futures.ProcessPoolExecutor``: the fair queue needs chunks of a few
headers (a newcomer waits for a chunk or two), and the executor's path for one chunk
(its manager and feeder threads, a shared result queue under a lock, three futures and
their callbacks) cost the bank's process ~0.8 ms of CPU per chunk: a fifth more CPU per
redemption than the RSA itself leaves room for (``bank_ab_cpu_new_vs_base``, make bench).
Here one thread per worker takes the next chunks from the fair queue (several while one
caller is alone: a round trip costs the bank's process a thread wake-up), sends them as one
message, and reads the answer: one pickle each way. It keeps DEPTH = 2 messages at its
worker, so that the next one is already in the pipe when the worker finishes one, whenever
the bank's thread gets the CPU back (on a busy host that can take milliseconds).

A newcomer must not wait behind those: when one arrives (``FairQueue``'s ``contended``)
the pool bumps a counter in shared memory, and a worker checks it between two chunks of a
message of several: if it moved since the message was sent, the worker answers what it has
done and gives the rest back (``requeue``), so the newcomer waits for one chunk at most. A
message of one chunk always runs whole, which is what guarantees progress.

A worker that dies (the OOM killer, say) is replaced by its thread, and the chunk it was
on is tried once more on the new one. A worker leaves when its pipe closes: when the bank
closes it, or when the bank itself is gone (even after SIGKILL).
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .fair import FairQueue, Task

READY_TIMEOUT_S = 60.0
DEPTH = 2  # messages at a worker at once: one running, the next already in its pipe
GROUP = 8  # chunks per message at most (while their caller is alone)
Work = Callable[[Any], Any]


# Jobs and answers are plain data: the standard pickler straight into the pipe's bytes,
# without the ``ForkingPickler`` (and its buffer) that ``Connection.send`` builds for each.
def _put(conn: Connection, obj: Any) -> None:
    conn.send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _get(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())  # noqa: S301 - our own worker, over our own pipe


def _serve(
    conn: Connection, epoch: Any, init: Callable[..., None], args: tuple[Any, ...], work: Work
) -> None:
    """A worker's life: ``init(*args)`` once, then ``work`` on the jobs of every message,
    answered together; a message of several stops early when ``epoch`` moved (a newcomer)."""
    init(*args)
    _put(conn, [(True, None)])
    while True:
        try:
            sent_at, jobs = _get(conn)
        except (EOFError, OSError):
            return
        answers = []
        for job in jobs:
            if len(jobs) > 1 and epoch.value != sent_at:
                break  # the rest goes back to the fair queue
            try:
                answers.append((True, work(job)))
            except Exception as exc:  # a bug in ``work``: the caller gets it, the worker lives on
                answers.append((False, exc))
        try:
            _put(conn, answers)
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
        self._epoch = self._ctx.RawValue("Q", 0)  # moved by each newcomer (see above)
        self._bump = threading.Lock()
        self._fair = fair
        fair.on_contended(self._newcomer)
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
        proc = self._ctx.Process(target=_serve, args=(theirs, self._epoch, *self._target), daemon=True)
        proc.start()
        theirs.close()  # ours is the only other end: its EOF says the worker is gone
        return proc, mine

    @staticmethod
    def _ready(proc: BaseProcess, conn: Connection) -> tuple[BaseProcess, Connection]:
        if not conn.poll(READY_TIMEOUT_S):
            proc.kill()
            raise BrokenProcessPool("a decryption worker did not start")
        try:
            _get(conn)
        except (EOFError, OSError):
            raise BrokenProcessPool(f"a decryption worker exited at start ({proc.exitcode})") from None
        return proc, conn

    def _newcomer(self) -> None:
        with self._bump:
            self._epoch.value += 1

    def _drive(self, k: int) -> None:
        """Keeps up to DEPTH messages at worker ``k``: when it finishes one, the next is
        already in its pipe, whenever this thread gets the CPU back."""
        sent: deque[list[Task[Any]]] = deque()
        retried: set[int] = set()
        while True:
            if len(sent) < DEPTH:
                group = self._fair.take_many(GROUP, wait=not sent)
                if group:
                    sent.append(group)
                    if not self._send(k, group):
                        self._recover(k, sent, retried)
                    continue
                if not sent:  # closed, and nothing left at the worker
                    return
            try:
                answers = _get(self._workers[k][1])
            except (EOFError, OSError):
                self._recover(k, sent, retried)
                continue
            group = sent.popleft()
            for task, (ok, value) in zip(group, answers, strict=False):  # the answered ones
                retried.discard(id(task))
                if ok:
                    self._fair.done(task, value)
                else:
                    self._fair.done(task, exc=value)
            if len(answers) < len(group):
                self._fair.requeue(group[len(answers) :])

    def _send(self, k: int, group: list[Task[Any]]) -> bool:
        try:
            _put(self._workers[k][1], (self._epoch.value, [t.job for t in group]))
            return True
        except OSError:
            return False

    def _recover(self, k: int, sent: deque[list[Task[Any]]], retried: set[int]) -> None:
        """Worker ``k`` died: a new one gets the chunks it had, once; a chunk that was
        already tried again fails."""
        proc, conn = self._workers[k]
        conn.close()
        proc.join(5)
        tasks = [t for group in sent for t in group]
        sent.clear()
        for task in [t for t in tasks if id(t) in retried or self._closed]:
            tasks.remove(task)
            retried.discard(id(task))
            self._fair.done(task, exc=BrokenProcessPool("a decryption worker died"))
        if not tasks:
            return
        try:
            self._workers[k] = self._ready(*self._spawn())
        except BrokenProcessPool as exc:
            for task in tasks:
                self._fair.done(task, exc=exc)
            return
        for task in tasks:  # one message each: a message of one chunk always runs whole
            retried.add(id(task))
            sent.append([task])
            self._send(k, [task])  # a failure shows at the next receive

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

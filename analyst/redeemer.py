"""Redemption at the bank, batched: the analyst's one place that talks to the bank.

Operations arrive one by one; headers leave in batches. A redeemer thread takes the first
waiting header, then whatever else is waiting (up to ``batch_max``, lingering at most
``linger_s`` for more), and sends them in one ``POST /v1/redeem`` over the bank client's
persistent mTLS connection. Under load the batches grow by themselves: everything that
arrived during one round trip goes in the next.

When the bank cannot be reached (or answers 503), the batch is retried with a growing
pause until each header's own deadline (``wait_max_s`` after it arrived); only then does
its operation fail, as ``bank_unreachable``. Nothing is ever treated as spent unless the
bank answered ``ok`` for it: a refusal, an error or an outage leaves the coin unspent and
the device's claim can refund it. Redemption is idempotent on the bank's side (same
analyst, same operation digest: same keys), so retrying is always safe.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ecoin.common.bank_client import BankError, RedeemItem, RedeemResult, Unavailable

from . import metrics

log = logging.getLogger("ecoin.analyst.redeemer")

__all__ = ["Bank", "Outcome", "Redeemer", "RedeemItem"]


class Bank(Protocol):
    """What the redeemer needs of ``ecoin.common.bank_client.BankClient``."""

    def redeem(self, items: list[RedeemItem]) -> list[RedeemResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """The end of one redemption: keys, or the reason there are none (for the log)."""

    keys: tuple[bytes, bytes, bytes] | None  # (k_enc, k_mac, iv)
    reason: str = ""  # refused:<code>, bank_unreachable, bank_error:<code>, shutdown

    @property
    def ok(self) -> bool:
        return self.keys is not None


Done = Callable[[Outcome], None]


@dataclass
class _Pending:
    item: RedeemItem
    done: Done
    deadline: float


class Redeemer:
    def __init__(
        self,
        banks: Sequence[Bank],
        batch_max: int = 64,
        linger_s: float = 0.001,
        wait_max_s: float = 30.0,
        backoff_max_s: float = 2.0,
    ) -> None:
        if not banks:
            raise ValueError("the redeemer needs at least one bank connection")
        if not 1 <= batch_max <= 256:
            raise ValueError("batch_max must be 1 to 256 (the bank's limit)")
        self.banks = list(banks)
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.wait_max_s = wait_max_s
        self.backoff_max_s = backoff_max_s
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._outage_since: float | None = None
        self._lock = threading.Lock()

    def start(self) -> Redeemer:
        for i, bank in enumerate(self.banks):
            t = threading.Thread(target=self._run, args=(bank,), name=f"redeemer-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def submit(self, item: RedeemItem, done: Done) -> None:
        """Queues one header; ``done(outcome)`` is called once, from a redeemer thread."""
        if self._stop.is_set():
            done(Outcome(None, "shutdown"))
            return
        self._queue.put(_Pending(item, done, time.monotonic() + self.wait_max_s))

    def close(self, timeout: float = 5.0) -> None:
        """Stops taking work; headers still queued end as ``shutdown`` (not redeemed)."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        while True:
            try:
                p = self._queue.get_nowait()
            except queue.Empty:
                break
            if p is not None:
                p.done(Outcome(None, "shutdown"))
        for bank in self.banks:
            bank.close()

    # The redeemer thread.

    def _run(self, bank: Bank) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                self._redeem(bank, batch)

    def _collect(self) -> list[_Pending]:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        linger_until = time.monotonic() + self.linger_s
        while len(batch) < self.batch_max:
            wait = linger_until - time.monotonic()
            try:
                p = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if p is None:  # a stop marker: keep it for the loop
                self._queue.put(None)
                break
            batch.append(p)
        return batch

    def _redeem(self, bank: Bank, batch: list[_Pending]) -> None:
        pause = 0.05
        while batch:
            started = time.monotonic()
            try:
                results = bank.redeem([p.item for p in batch])
            except Unavailable as exc:
                batch = self._outage(batch, str(exc))
                if batch and self._stop.wait(pause):
                    self._finish(batch, Outcome(None, "shutdown"))
                    return
                pause = min(pause * 2, self.backoff_max_s)
                continue
            except BankError as exc:  # forbidden, malformed, unauthenticated...: retrying will not help
                log.error("bank_error", extra={"code": exc.code, "message": exc.message, "items": len(batch)})
                self._finish(batch, Outcome(None, f"bank_error:{exc.code}"))
                return
            except Exception:
                log.exception("bank_client_failed", extra={"items": len(batch)})
                self._finish(batch, Outcome(None, "bank_error:internal"))
                return
            metrics.BANK_SECONDS.observe(time.monotonic() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            self._recovered()
            if len(results) != len(batch):
                log.error("bank_answer_mismatch", extra={"items": len(batch), "results": len(results)})
                self._finish(batch, Outcome(None, "bank_error:mismatch"))
                return
            for p, r in zip(batch, results, strict=True):
                outcome = Outcome((r.k_enc, r.k_mac, r.iv)) if r.ok else Outcome(None, f"refused:{r.code}")
                metrics.REDEMPTIONS.labels("ok" if r.ok else r.code).inc()
                p.done(outcome)
            return

    def _outage(self, batch: list[_Pending], why: str) -> list[_Pending]:
        """Logs the outage once, fails the headers past their deadline, keeps the others."""
        metrics.BANK_RETRIES.inc()
        with self._lock:
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        if first:
            log.warning("bank_unreachable", extra={"error": why[:200], "waiting": len(batch)})
        now = time.monotonic()
        late = [p for p in batch if now >= p.deadline]
        if late:
            log.warning("bank_wait_expired", extra={"operations": len(late), "wait_max_s": self.wait_max_s})
            self._finish(late, Outcome(None, "bank_unreachable"))
        return [p for p in batch if now < p.deadline]

    def _recovered(self) -> None:
        with self._lock:
            since, self._outage_since = self._outage_since, None
        if since is not None:
            log.info("bank_reachable", extra={"outage_s": round(time.monotonic() - since, 3)})

    @staticmethod
    def _finish(batch: list[_Pending], outcome: Outcome) -> None:
        if outcome.reason != "shutdown":
            metrics.REDEMPTIONS.labels(outcome.reason.split(":")[0]).inc(len(batch))
        for p in batch:
            p.done(outcome)

"""Redemption at the bank, batched: the analyst's one place that talks to the bank.

Operations arrive one by one; headers leave in batches. A redeemer thread takes the first
waiting header, then whatever else is waiting (up to ``batch_max``, lingering at most
``linger_s`` for more), and sends them in one ``POST /v1/redeem`` over the bank client's
persistent mTLS connection. Under load the batches grow by themselves: everything that
arrived during one round trip goes in the next.

The redeemer survives every bank failure, and every operation it took is answered once:

- a failure that may pass (no connection, a refused handshake, 503, any 5xx, a proxy's
  non-JSON 502) retries the batch with a growing pause until each header's own deadline
  (``wait_max_s`` after it arrived); only then does its operation fail, as
  ``bank_unreachable``. Retrying is always safe: redemption is idempotent on the bank's
  side (same analyst, same operation digest: same keys);
- a refusal of the whole call (4xx: forbidden, not_found, malformed...) will not pass by
  retrying: the batch fails at once as ``bank_error:<code>``;
- a bug (anything else) fails the batch as ``bank_error:internal`` and the thread goes on.

A call whose answer was lost may still have been paid (the bank died after the spend's
commit). When such a header's deadline passes, its operation fails as above, and the
header is kept (``recover_s``, under the gateway's grace for late answers); once the bank
answers again, a redeemer asks for it once more with ``repeat``, which spends nothing: if
it had been paid, the keys come back and ``late_done`` gets them, so the service can still
send the RESULT, which the gateway relays late and the device settles its doubt with.

Nothing is ever treated as spent unless the bank answered ``ok`` for it: a refusal, an
error or an outage leaves the coin unspent and the device's claim can refund it. From the
first failed call to the next call that works, ``healthy()`` is False; while it is, an
idle redeemer probes the bank (``balance``, an analyst call through the bank's database)
with the same growing pause. ``ensure_running`` (the service's supervisor) restarts a
redeemer thread that died anyway. The log never carries a coin, a key or a header.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ecoin.common.bank_client import BankError, RedeemItem, RedeemResult, Unavailable
from ecoin.common.bank_errors import Unauthenticated

from .metrics import Metrics

log = logging.getLogger("ecoin.analyst.redeemer")

__all__ = ["Bank", "Outcome", "Redeemer", "RedeemItem"]


class Bank(Protocol):
    """What the redeemer needs of ``ecoin.common.bank_client.BankClient``."""

    def redeem(self, items: list[RedeemItem]) -> list[RedeemResult]: ...

    def balance(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """The end of one redemption: keys, or the reason there are none (for the log)."""

    keys: tuple[bytes, bytes, bytes] | None  # (k_enc, k_mac, iv)
    reason: str = ""  # refused:<code>, bank_unreachable, bank_error:<code>, shutdown
    coins: int = 1  # when ok: the coins the bank spent (the price), told to the device as "paid"

    @property
    def ok(self) -> bool:
        return self.keys is not None


Done = Callable[[Outcome], None]
# How long a header whose answer was lost is asked for again: within the gateway's grace for
# late RESULTs (gateway/awaiting.py LATE_GRACE_S, 120 s after the deadline), which it must reach.
RECOVER_S = 100.0
UNSURE_MAX = 1024  # each holds its OPERATION frame (at most wire.FRAME_MAX bytes)


@dataclass
class _Pending:
    item: RedeemItem
    done: Done
    deadline: float
    answered: bool = field(default=False)
    late: str = "bank_unreachable"  # the reason when the deadline passes
    late_done: Done | None = None  # the keys of a payment whose answer was lost, found later
    unsure: bool = False  # a call carrying it failed without an answer: it may have been paid

    def answer(self, outcome: Outcome) -> None:
        """Calls ``done`` once, whatever happens around it (a crash of the caller's code
        must not reach the redeemer thread)."""
        if self.answered:
            return
        self.answered = True
        _call(self.done, outcome)


def _call(done: Done, outcome: Outcome) -> None:
    try:
        done(outcome)
    except Exception:
        log.exception("redemption_callback_failed")


def _repeat(item: RedeemItem) -> RedeemItem:
    """The item asked again: ``repeat``, and a ``not_after`` in the past in any case, so that
    a bank too old to know ``repeat`` refuses it (``deadline_passed``) rather than spend."""
    not_after = item.not_after if item.not_after is not None else time.time() - 1
    return dataclasses.replace(item, repeat=True, not_after=not_after)


def retryable(exc: BankError) -> bool:
    """True for failures that may pass: the transport, a refused handshake, any 5xx."""
    return isinstance(exc, (Unavailable, Unauthenticated)) or exc.status >= 500


class Backoff:
    """A pause that doubles from ``low`` up to ``high`` and starts over after a success."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, max(low, high)
        self.pause = low

    def next(self) -> float:
        pause, self.pause = self.pause, min(self.pause * 2, self.high)
        return pause

    def reset(self) -> None:
        self.pause = self.low


class Redeemer:
    def __init__(
        self,
        banks: Sequence[Bank],
        batch_max: int = 64,
        linger_s: float = 0.001,
        wait_max_s: float = 30.0,
        backoff_max_s: float = 2.0,
        backoff_min_s: float = 0.05,
        recover_s: float = RECOVER_S,
        *,
        metrics: Metrics | None = None,  # the analyst's; a unit test's redeemer gets its own
    ) -> None:
        if not banks:
            raise ValueError("the redeemer needs at least one bank connection")
        if not 1 <= batch_max <= 256:
            raise ValueError("batch_max must be 1 to 256 (the bank's limit)")
        self.banks = list(banks)
        self.metrics = metrics or Metrics()
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.wait_max_s = wait_max_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.recover_s = recover_s
        self.restarts = 0
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._threads: list[threading.Thread | None] = [None] * len(self.banks)
        self._stop = threading.Event()
        self._failing_since: float | None = None  # first failed call of the current outage
        self._probe = Backoff(backoff_min_s, backoff_max_s)
        self._next_probe = 0.0
        self._lock = threading.Lock()
        self._unsure: deque[tuple[_Pending, float]] = deque()  # (header, until when it is asked for)

    def start(self) -> Redeemer:
        for i in range(len(self.banks)):
            self._start(i)
        return self

    def _start(self, i: int) -> None:
        t = threading.Thread(target=self._run, args=(i,), name=f"redeemer-{i}", daemon=True)
        self._threads[i] = t
        t.start()

    def ensure_running(self) -> int:
        """The supervisor's check: restarts every redeemer thread that died; returns how many."""
        restarted = 0
        with self._lock:
            if self._stop.is_set():
                return 0
            for i, t in enumerate(self._threads):
                if t is not None and not t.is_alive():
                    log.error("redeemer_restarted", extra={"redeemer": t.name})
                    self._start(i)
                    restarted += 1
            self.restarts += restarted
        return restarted

    def healthy(self) -> bool:
        """False while the bank cannot redeem for us, or a redeemer thread is dead."""
        alive = all(t is not None and t.is_alive() for t in self._threads)
        return alive and self._failing_since is None and not self._stop.is_set()

    def submit(
        self, item: RedeemItem, done: Done, deadline: float | None = None, late_done: Done | None = None
    ) -> None:
        """Queues one header; ``done(outcome)`` is called once, from a redeemer thread.
        ``deadline`` (monotonic) is when its device stops waiting: never redeemed after it,
        so a coin whose device gave up stays unspent and refundable (``deadline_passed``).
        ``late_done(outcome)``, if given, is called at most once after a failed ``done``:
        with the keys of a payment whose answer had been lost."""
        if self._stop.is_set():
            done(Outcome(None, "shutdown"))
            return
        limit = time.monotonic() + self.wait_max_s
        if deadline is not None and deadline < limit:
            self._queue.put(_Pending(item, done, deadline, late="deadline_passed", late_done=late_done))
        else:
            self._queue.put(_Pending(item, done, limit, late_done=late_done))

    def close(self, timeout: float = 5.0) -> None:
        """Stops taking work; headers still queued end as ``shutdown`` (not redeemed)."""
        self._stop.set()
        threads = [t for t in self._threads if t is not None]
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            t.join(timeout)
        while True:
            try:
                p = self._queue.get_nowait()
            except queue.Empty:
                break
            if p is not None:
                p.answer(Outcome(None, "shutdown"))
        for bank in self.banks:
            bank.close()

    # The redeemer thread.

    def _run(self, i: int) -> None:
        bank = self.banks[i]
        while not self._stop.is_set():
            batch: list[_Pending] = []
            try:
                batch = self._collect()
                if batch:
                    self._redeem(bank, batch)
                elif self._failing_since is not None:
                    self._probe_bank(bank)
                batch = []
                self._ask_again(bank)
            except Exception:  # a bug of ours: answer what we hold, then go on
                log.exception("redeemer_error", extra={"items": len(batch)})
                self._finish(batch, Outcome(None, "bank_error:internal"))
                self._stop.wait(self.backoff_min_s)
            except BaseException:  # the thread ends: answer first; the supervisor restarts it
                self._finish(batch, Outcome(None, "bank_error:internal"))
                raise

    def _collect(self) -> list[_Pending]:
        """The next batch; empty when stopping, or when it is time to probe a failing bank."""
        try:
            first = self._queue.get(timeout=self._idle_wait())
        except queue.Empty:
            return []
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

    def _idle_wait(self) -> float | None:
        if self._failing_since is None:
            return None
        return max(0.0, self._next_probe - time.monotonic())

    def _probe_bank(self, bank: Bank) -> None:
        with self._lock:  # several idle threads: one probe per pause
            if time.monotonic() < self._next_probe or self._failing_since is None:
                return
            self._next_probe = time.monotonic() + self._probe.next()
        try:
            bank.balance()
        except BankError as exc:
            log.info("bank_probe_failed", extra={"code": exc.code, "reason": exc.message[:200]})
            return
        self._recovered()

    def _redeem(self, bank: Bank, batch: list[_Pending]) -> None:
        backoff = Backoff(self.backoff_min_s, self.backoff_max_s)
        # Expired first, every round: past its deadline (its device gone, or wait_max_s spent
        # on an outage) a header is answered, never sent to the bank.
        while batch := self._expire(batch):
            started = time.monotonic()
            try:
                results = bank.redeem([p.item for p in batch])
            except BankError as exc:
                self._failed(exc, len(batch))
                for p in batch:  # perhaps sent and paid (a refused handshake may follow a lost answer)
                    p.unsure = True
                if not retryable(exc):  # forbidden, not_found, malformed...: retrying will not help
                    self._finish(batch, Outcome(None, f"bank_error:{exc.code}"))
                    return
                if self._stop.wait(backoff.next()):
                    self._finish(batch, Outcome(None, "shutdown"))
                    return
                continue
            self.metrics.bank_seconds.observe(time.monotonic() - started)
            self.metrics.batch_size.observe(len(batch))
            if len(results) != len(batch):
                self._failed(BankError("the bank answered a different number of results"), len(batch))
                self._finish(batch, Outcome(None, "bank_error:mismatch"))
                return
            self._recovered()
            for p, r in zip(batch, results, strict=True):
                outcome = Outcome(None, f"refused:{r.code}")
                if r.ok:
                    outcome = Outcome((r.k_enc, r.k_mac, r.iv), coins=r.coins)
                self.metrics.redemptions.labels("ok" if r.ok else r.code).inc()
                p.answer(outcome)
            return

    def _failed(self, exc: BankError, items: int) -> None:
        """Marks the bank failing and logs the failure: once per outage at warning level,
        then every retry at debug (the reason, never the request)."""
        if retryable(exc):
            self.metrics.bank_retries.inc()
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
                self._probe.reset()
                self._next_probe = time.monotonic() + self._probe.next()
        event = "bank_unreachable" if retryable(exc) else "bank_error"
        fields = {"code": exc.code, "status": exc.status, "reason": exc.message[:200], "items": items}
        log.log(logging.WARNING if first or not retryable(exc) else logging.DEBUG, event, extra=fields)

    def _expire(self, batch: list[_Pending]) -> list[_Pending]:
        """Fails the headers past their deadline, keeps the others."""
        now = time.monotonic()
        late = [p for p in batch if now >= p.deadline]
        if late:
            log.warning("bank_wait_expired", extra={"operations": len(late), "wait_max_s": self.wait_max_s})
            for p in late:
                p.answer(Outcome(None, p.late))
                if p.unsure and p.late_done is not None:
                    self._keep(p)
        return [p for p in batch if now < p.deadline]

    # Payments whose answer was lost.

    def _keep(self, p: _Pending) -> None:
        """Kept until ``recover_s`` past its deadline (the gateway's grace counts from there)."""
        with self._lock:
            self._unsure.append((p, p.deadline + self.recover_s))
            if len(self._unsure) > UNSURE_MAX:  # an outage of many: the oldest go first
                self._unsure.popleft()
                self._dropped(1, "cap")

    def _ask_again(self, bank: Bank) -> None:
        """Asks the bank, spending nothing, for the keys of the kept headers: the bank is
        answering again, so some of them may turn out paid."""
        while todo := self._take_unsure():
            try:
                results = bank.redeem([_repeat(p.item) for p, _ in todo])
            except BankError as exc:
                self._failed(exc, len(todo))
                if not retryable(exc):  # the same call would be refused again
                    self._dropped(len(todo), f"bank_error:{exc.code}")
                    return
                with self._lock:
                    self._unsure.extendleft(reversed(todo))
                return
            except Exception:  # a bug of ours: they are dropped, and said so
                log.exception("redeemer_error", extra={"items": len(todo)})
                self._dropped(len(todo), "internal")
                return
            if len(results) != len(todo):
                self._dropped(len(todo), "bank_error:mismatch")
                return
            paid = 0
            now = time.monotonic()
            for (p, until), r in zip(todo, results, strict=True):
                self.metrics.redemptions.labels("repeat_ok" if r.ok else f"repeat_{r.code}").inc()
                if r.ok and p.late_done is not None and now < until:
                    paid += 1
                    _call(p.late_done, Outcome((r.k_enc, r.k_mac, r.iv), coins=r.coins))
            log.info("lost_answers_asked", extra={"items": len(todo), "paid": paid})

    def _take_unsure(self) -> list[tuple[_Pending, float]]:
        with self._lock:
            if self._failing_since is not None or self._stop.is_set() or not self._unsure:
                return []
            now = time.monotonic()
            live = [(p, until) for p, until in self._unsure if until > now]
            if len(live) < len(self._unsure):
                self._dropped(len(self._unsure) - len(live), "window")
            todo, self._unsure = live[: self.batch_max], deque(live[self.batch_max :])
            return todo

    def _dropped(self, items: int, why: str) -> None:
        """Kept headers never asked again: each may be a coin paid without a result."""
        self.metrics.redemptions.labels("repeat_dropped").inc(items)
        log.warning("lost_answers_dropped", extra={"items": items, "why": why})

    def _recovered(self) -> None:
        with self._lock:
            since, self._failing_since = self._failing_since, None
        if since is not None:
            log.info("bank_reachable", extra={"outage_s": round(time.monotonic() - since, 3)})

    def _finish(self, batch: list[_Pending], outcome: Outcome) -> None:
        todo = [p for p in batch if not p.answered]
        if outcome.reason != "shutdown" and todo:
            self.metrics.redemptions.labels(outcome.reason.split(":")[0]).inc(len(todo))
        for p in todo:
            p.answer(outcome)

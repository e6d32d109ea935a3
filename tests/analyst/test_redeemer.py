"""The redeemer's batching, retries, backoff, health and restarts, against a scripted bank
in this process (the end-to-end cases with a real bank are in test_bank_faults.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from ecoin.analyst.redeemer import Backoff, Outcome, Redeemer, RedeemItem
from ecoin.common.bank_client import RedeemResult
from ecoin.common.bank_errors import BankError, NotFound, Unauthenticated, Unavailable
from ecoin.testing.metrics import metric
from ecoin.testing.servers import wait_until

Step = Callable[[list[RedeemItem]], list[RedeemResult]]


class ScriptedBank:
    """Answers each redeem call with the next step of its script (then: every item ok);
    records the size and time of every call."""

    def __init__(self, *script: BaseException | Step) -> None:
        self.script = list(script)
        self.calls: list[tuple[float, int]] = []
        self.probes = 0
        self.down = False

    def redeem(self, items: list[RedeemItem]) -> list[RedeemResult]:
        self.calls.append((time.monotonic(), len(items)))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if step is not None:
            return step(items)
        return [RedeemResult(True, b"e" * 16, b"m" * 32, b"i" * 16) for _ in items]

    def balance(self) -> int:
        self.probes += 1
        if self.down:
            raise Unavailable("still down")
        return 0

    def close(self) -> None:
        pass


class Outcomes:
    def __init__(self) -> None:
        self.got: dict[int, Outcome] = {}
        self.cond = threading.Condition()

    def callback(self, i: int) -> Callable[[Outcome], None]:
        def done(outcome: Outcome) -> None:
            with self.cond:
                self.got[i] = outcome
                self.cond.notify_all()

        return done

    def wait(self, n: int, timeout: float = 10.0) -> dict[int, Outcome]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), self.got
            return dict(self.got)


def item(i: int) -> RedeemItem:
    return RedeemItem(bytes(8), bytes(256), i.to_bytes(16, "big"), "average", bytes(32), bytes(32))


def submit(r: Redeemer, out: Outcomes, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        r.submit(item(i), out.callback(i))


def test_waiting_headers_leave_in_batches_of_at_most_batch_max() -> None:
    bank, out = ScriptedBank(), Outcomes()
    r = Redeemer([bank], batch_max=4, linger_s=0.05)
    submit(r, out, 10)  # all waiting before the thread starts
    r.start()
    try:
        assert all(o.ok for o in out.wait(10).values())
    finally:
        r.close()
    assert [n for _, n in bank.calls] == [4, 4, 2]
    assert metric(r.metrics, 'ecoin_analyst_redemptions_total{result="ok"}') == 10
    assert metric(r.metrics, "ecoin_analyst_batch_size_count") == 3


def test_two_redeemers_in_one_process_count_apart() -> None:
    """Each has the registry it was given (an analyst's): nothing is shared between them."""
    outs = [Outcomes(), Outcomes()]
    pair = [Redeemer([ScriptedBank()]).start(), Redeemer([ScriptedBank(Unavailable("down"))]).start()]
    try:
        for r, out, n in zip(pair, outs, (3, 1), strict=True):
            submit(r, out, n)
            assert all(o.ok for o in out.wait(n).values())
    finally:
        for r in pair:
            r.close()
    ok = 'ecoin_analyst_redemptions_total{result="ok"}'
    assert [metric(r.metrics, ok) for r in pair] == [3, 1]
    assert [metric(r.metrics, "ecoin_analyst_bank_retries_total") for r in pair] == [0, 1]


def test_transient_failures_are_retried_with_a_growing_pause() -> None:
    down = [Unavailable("connection refused"), Unauthenticated("handshake"), BankError("internal")]
    bank, out = ScriptedBank(*down), Outcomes()
    r = Redeemer([bank], backoff_min_s=0.05, backoff_max_s=0.15).start()
    try:
        submit(r, out, 1)
        assert out.wait(1)[0].ok  # the fourth call worked
        assert r.healthy()
    finally:
        r.close()
    times = [t for t, _ in bank.calls]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.15  # doubles, then capped
    assert gaps[2] < 0.3


def test_an_operation_fails_at_its_deadline_and_the_probe_restores_health() -> None:
    bank, out = ScriptedBank(*[Unavailable("down")] * 1000), Outcomes()
    bank.down = True
    r = Redeemer([bank], wait_max_s=0.3, backoff_min_s=0.02, backoff_max_s=0.05).start()
    try:
        submit(r, out, 1)
        assert out.wait(1)[0].reason == "bank_unreachable"
        assert not r.healthy()
        wait_until(lambda: bank.probes >= 2, 10, "probes")  # idle, it probes the bank
        assert not r.healthy()
        bank.down = False
        wait_until(r.healthy, 10, "healthy")
    finally:
        r.close()


def test_a_refused_call_fails_its_batch_at_once() -> None:
    bank, out = ScriptedBank(NotFound("no such path")), Outcomes()
    r = Redeemer([bank], linger_s=0.05)
    submit(r, out, 3)
    r.start()
    try:
        assert {o.reason for o in out.wait(3).values()} == {"bank_error:not_found"}
        assert len(bank.calls) == 1 and not r.healthy()
        submit(r, out, 1, start=3)  # the next call works: healthy again
        assert out.wait(4)[3].ok and r.healthy()
    finally:
        r.close()


def test_a_wrong_answer_or_a_crashing_callback_does_not_stop_the_redeemer() -> None:
    bank, out = ScriptedBank(lambda items: [], ValueError("a bug")), Outcomes()
    r = Redeemer([bank]).start()
    try:
        submit(r, out, 1)
        assert out.wait(1)[0].reason == "bank_error:mismatch"
        submit(r, out, 1, start=1)
        assert out.wait(2)[1].reason == "bank_error:internal"

        def boom(_: Outcome) -> None:
            raise RuntimeError("the caller's bug")

        r.submit(item(2), boom)
        submit(r, out, 1, start=3)
        assert out.wait(3)[3].ok
    finally:
        r.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_thread_answers_its_batch_and_the_supervisor_restarts_it() -> None:
    bank, out = ScriptedBank(SystemExit()), Outcomes()
    r = Redeemer([bank]).start()
    try:
        submit(r, out, 1)
        assert out.wait(1)[0].reason == "bank_error:internal"
        wait_until(lambda: not r.healthy(), 10, "the thread gone")
        assert r.ensure_running() == 1 and r.restarts == 1
        submit(r, out, 1, start=1)
        assert out.wait(2)[1].ok and r.healthy()
        assert r.ensure_running() == 0
    finally:
        r.close()


def test_queued_headers_end_as_shutdown_on_close() -> None:
    bank, out = ScriptedBank(*[Unavailable("down")] * 1000), Outcomes()
    r = Redeemer([bank], backoff_min_s=0.05).start()
    submit(r, out, 2)
    wait_until(lambda: len(bank.calls) >= 1, 10, "a call")
    r.close()
    assert {o.reason for o in out.wait(2).values()} == {"shutdown"}


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1


def test_an_operation_whose_device_gave_up_is_never_redeemed() -> None:
    bank, out = ScriptedBank(), Outcomes()
    r = Redeemer([bank], linger_s=0.01)
    r.submit(item(0), out.callback(0), deadline=time.monotonic() - 0.1)  # waited in the queue too long
    r.start()
    try:
        assert out.wait(1)[0].reason == "deadline_passed"
    finally:
        r.close()
    assert bank.calls == []  # the coin was never sent to the bank: it stays refundable


def test_a_bank_outage_is_waited_out_only_until_the_device_gives_up() -> None:
    bank, out = ScriptedBank(*[Unavailable("down")] * 1000), Outcomes()
    r = Redeemer([bank], wait_max_s=30.0, backoff_min_s=0.02, backoff_max_s=0.05).start()
    try:
        given_up = time.monotonic() + 0.3
        r.submit(item(0), out.callback(0), deadline=given_up)
        assert out.wait(1)[0].reason == "deadline_passed"  # not the 30 s of wait_max_s
    finally:
        r.close()
    assert bank.calls and all(t < given_up for t, _ in bank.calls)  # no call after the device gave up


def test_a_second_connection_redeems_while_a_batch_is_stuck_at_the_bank() -> None:
    """Why analysts should redeem over two connections (docs/SCALING.md 1.3): a header that
    arrives while a batch is at a slow bank goes out on the other connection at once,
    instead of waiting for that whole call."""
    gate, calls = threading.Event(), []

    def first_is_stuck(items: list[RedeemItem]) -> list[RedeemResult]:
        calls.append(len(items))
        if len(calls) == 1:
            assert gate.wait(10)
        return [RedeemResult(True, b"e" * 16, b"m" * 32, b"i" * 16) for _ in items]

    out = Outcomes()
    r = Redeemer([ScriptedBank(first_is_stuck), ScriptedBank(first_is_stuck)], linger_s=0).start()
    try:
        submit(r, out, 1)
        wait_until(lambda: len(calls) == 1, 10)
        submit(r, out, 1, start=1)
        assert out.wait(1)[1].ok  # answered while the first call is still at the bank
        assert 0 not in out.got
        gate.set()
        assert all(o.ok for o in out.wait(2).values())
    finally:
        gate.set()
        r.close()

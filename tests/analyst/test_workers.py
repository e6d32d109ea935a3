"""Analysers in worker processes: time limit, crashes, memory, and the pool lives on."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.analyst.plugins import InvalidReadings
from ecoin.analyst.workers import AnalysisFailed, AnalysisTimeout, WorkerPool
from ecoin.testing.servers import wait_until

GOOD = json.dumps({"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [1, 2, 3, 10]}).encode()


@pytest.fixture
def pool(with_plugins: Path) -> Iterator[WorkerPool]:
    with WorkerPool(2, timeout_s=1.0, options={"anomaly": {"k": 1.0}}, memory_mb=1024) as p:
        yield p


def result(body: bytes) -> object:
    return json.loads(body)


def test_workers_answer_with_the_encoded_result(pool: WorkerPool) -> None:
    assert result(pool.run("average", GOOD)) == {"service": "average", "result": 4.0}
    assert result(pool.run("median", GOOD)) == {"service": "median", "result": 2.5}
    assert result(pool.run("anomaly", GOOD))["result"]["indices"] == [3]  # type: ignore[index]


def test_invalid_readings_are_reported_as_such(pool: WorkerPool) -> None:
    with pytest.raises(InvalidReadings, match="missing field 'sensor'"):
        pool.run("average", b'{"values": [1]}')
    many = json.dumps({"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [1] * 17}).encode()
    with pytest.raises(InvalidReadings, match="breaks maxItems 16"):
        pool.run("median", many)  # the plug-in's own schema


def test_a_hung_analyser_is_killed_at_its_time_limit_and_replaced(pool: WorkerPool) -> None:
    before = set(pool.pids())
    with pytest.raises(AnalysisTimeout, match="sleepy exceeded its 1.0s limit"):
        pool.run("sleepy", GOOD)
    assert pool.replaced == 1 and len(pool.pids()) == 2 and set(pool.pids()) != before
    assert result(pool.run("average", GOOD))  # still serving


def test_an_analyser_that_kills_its_process_is_contained(pool: WorkerPool) -> None:
    with pytest.raises(AnalysisFailed, match="crashy killed its worker .exit code 3"):
        pool.run("crashy", GOOD)
    for _ in range(4):  # both workers, whichever is picked
        assert result(pool.run("average", GOOD))


def test_an_exception_or_a_memory_hog_fails_the_operation_only(pool: WorkerPool) -> None:
    with pytest.raises(AnalysisFailed, match="raiser raised RuntimeError") as failed:
        pool.run("raiser", GOOD)
    assert "always fails" not in str(failed.value)  # an analyser's message may quote readings
    with pytest.raises(AnalysisFailed, match="hog ran out of memory"):
        pool.run("hog", GOOD)
    assert pool.replaced == 0  # neither needed a new process
    assert result(pool.run("average", GOOD))


def test_prints_of_an_analyser_do_not_corrupt_the_answers(pool: WorkerPool) -> None:
    for _ in range(3):
        assert result(pool.run("chatty", GOOD)) == {"service": "chatty", "result": 4}


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_a_worker_killed_from_outside_while_idle_is_replaced(pool: WorkerPool) -> None:
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(_dead(pid) for pid in pool.pids()), timeout=10, what="workers dead")
    for _ in range(3):
        assert result(pool.run("size", GOOD)) == {"service": "size", "result": 4}
    assert pool.replaced >= 1


def test_unknown_analyser_and_closed_pool(pool: WorkerPool) -> None:
    with pytest.raises(AnalysisFailed, match="no analyser 'nope'"):
        pool.run("nope", GOOD)
    pids = pool.pids()
    pool.close()
    with pytest.raises(AnalysisFailed, match="closed"):
        pool.run("average", GOOD)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

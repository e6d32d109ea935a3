"""The helpers of bench/bench_mqtt_clients.py: the frames it sends are real v2 frames, the
CPU time the benches read of another process (bench/cputime.py) agrees with that process's
own, and rounds rotate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.protocol import wire

sys.path.append(str(Path(__file__).resolve().parents[2]))  # bench/ runs from the checkout, not installed
from bench import bench_mqtt_clients as bench  # noqa: E402
from bench import (
    cputime,  # noqa: E402
    mqtt_subjects,  # noqa: E402
)


def test_the_frames_are_a_real_operation_and_result() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    op_id, _kid, service, header, ct, _tag = wire.decode_operation(
        mqtt_subjects.operation_frame((key.n, key.e))
    )
    assert (len(op_id), service, len(header)) == (16, "average", 256)
    assert len(ct) > 0
    assert len(wire.decode_result(mqtt_subjects.result_frame())[2]) > 0


@pytest.mark.parametrize(
    "read, tick", [(cputime.precise, 0.0), (cputime.process, 0.021), (cputime.tree, 0.021)]
)
def test_cpu_time_of_another_process_as_it_reads_itself(read, tick) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys, time\n"
        "print(time.process_time(), flush=True); sys.stdin.readline()\n"  # idle until told
        "while time.process_time() < 0.3: pass\n"
        "print(time.process_time(), flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        idle = float(child.stdout.readline())
        seen_idle = read(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        busy = float(child.stdout.readline())
        seen_busy = read(child.pid)
    finally:
        child.communicate("")
    # Each reading is at or a little after the child's own (its print and our read between),
    # less up to two ticks where /proc counts user and system time in ticks each.
    assert idle - tick <= seen_idle < idle + 0.05
    assert busy - tick <= seen_busy < busy + 0.05


def test_rounds_rotate_so_each_client_takes_each_place() -> None:
    n = len(mqtt_subjects.KINDS)
    orders = [bench.order(r) for r in range(n)]
    assert all(sorted(o) == sorted(mqtt_subjects.KINDS) for o in orders)
    assert all(len({o[place] for o in orders}) == n for place in range(n))


def test_summary_takes_medians_and_keeps_every_round() -> None:
    got = bench.summary([(100.0, 0.2, 0.03), (300.0, 0.1, 0.01), (200.0, 0.3, 0.02)])
    assert got == {
        "msgs_per_s": 200.0,
        "cpu_ms": 0.2,
        "broker_cpu_ms": 0.02,
        "rounds": "100@0.200 300@0.100 200@0.300",
    }

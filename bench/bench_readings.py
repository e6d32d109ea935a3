"""Readings checks: fastjsonschema (analyst/readings.py) against the home-made validator it
replaced (readings_baseline.py), side by side in one run, in rounds that alternate the two
so that a noisy machine slows both alike.

Figures (per second, the median round; n values per reading):
- readings_validate_{old,new}_per_s: one schema check of already-parsed readings (n=4, the
  demo's size); readings_validate512_{old,new}_per_s: the same with the section's maximum.
- readings_parse_{old,new}_per_s: what the analyst does per operation, bytes of readings to
  a checked value (n=4); readings_parse512_{old,new}_per_s: n=512.
- Ratios (bench/run.py): readings_validate_new_vs_old and readings_parse_new_vs_old (and
  the 512 ones); above 1 means fastjsonschema is faster.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecoin.analyst import readings

from . import readings_baseline as baseline

ROUNDS = 9
ROUND_S = 0.1  # each side of a round runs for about this long


def _reading(n: int) -> bytes:
    values = [21.5 + (i % 50) / 10 for i in range(n)]
    doc = {"sensor": "temp0", "unit": "C", "start": 1795000000, "interval": 1.0, "values": values}
    return json.dumps(doc).encode()


def _rate(fn: Callable[[], Any]) -> float:
    """Calls per second of ``fn`` over about ROUND_S."""
    n, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < ROUND_S:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


def side_by_side(old: Callable[[], Any], new: Callable[[], Any]) -> tuple[float, float]:
    """Median calls/s of each, over ROUNDS alternating rounds."""
    old(), new()  # compiled and warm
    rates: tuple[list[float], list[float]] = ([], [])
    for i in range(ROUNDS):
        order = ((0, old), (1, new)) if i % 2 == 0 else ((1, new), (0, old))
        for side, fn in order:
            rates[side].append(_rate(fn))
    return statistics.median(rates[0]), statistics.median(rates[1])


def _pairs(data: bytes) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """(old, new) for each figure, on one reading."""
    schema, value = readings.READINGS_SCHEMA, json.loads(data)
    return {
        "validate": (lambda: baseline.validate(value, schema), lambda: readings.validate(value, schema)),
        "parse": (lambda: baseline.parse_readings(data, schema), lambda: readings.parse_readings(data)),
    }


def run(workdir: Path) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for n, tag in ((4, ""), (512, "512")):
        for what, (old, new) in _pairs(_reading(n)).items():
            old_rate, new_rate = side_by_side(old, new)
            out[f"readings_{what}{tag}_old_per_s"] = round(old_rate)
            out[f"readings_{what}{tag}_new_per_s"] = round(new_rate)
    return out

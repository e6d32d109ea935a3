"""Analysers written the way a third party would: one good one, and some that misbehave
on purpose so the analyst's tests can show it survives them."""

from __future__ import annotations

import os
import time
from typing import Any

from ecoin.analyst.plugins import READINGS_SCHEMA, Analyser


def _median(readings: dict[str, Any]) -> float:
    values = sorted(readings["values"])
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _slow(readings: dict[str, Any], delay: float = 0.05) -> float:
    time.sleep(delay)  # a heavy analysis, so that a test can catch operations in flight
    return sum(readings["values"]) / len(readings["values"])


def _sleep(readings: dict[str, Any]) -> None:
    time.sleep(3600)  # hangs: the worker's time limit must end it


def _crash(readings: dict[str, Any]) -> None:
    os._exit(3)  # kills its own process, like a segfault would


def _raise(readings: dict[str, Any]) -> None:
    raise RuntimeError("this analyser always fails")


def _hog(readings: dict[str, Any]) -> int:
    block = bytearray(4 * 1024 * 1024 * 1024)  # 4 GiB: beyond any sane memory limit
    return len(block)


def _chatty(readings: dict[str, Any]) -> int:
    print("an analyser that prints to stdout must not break the worker's pipe")
    return len(readings["values"])


_SMALL = {**READINGS_SCHEMA, "properties": {**READINGS_SCHEMA["properties"]}}
_SMALL["properties"]["values"] = {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "number"}}

MEDIAN = Analyser("median", "The median of the values (at most 16 values).", _median, schema=_SMALL)
SLOW = Analyser("slow", "The average, after a pause (option delay, seconds).", _slow, options={"delay": 0.05})
SLEEPY = Analyser("sleepy", "Never answers.", _sleep)
CRASHY = Analyser("crashy", "Kills its process.", _crash)
RAISER = Analyser("raiser", "Raises an exception.", _raise)
HOG = Analyser("hog", "Allocates 4 GiB.", _hog)
CHATTY = Analyser("chatty", "Prints to stdout, then counts the values.", _chatty)
NOT_AN_ANALYSER = {"name": "notone"}

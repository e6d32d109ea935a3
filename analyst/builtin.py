"""The built-in analysers: average, stats, size and anomaly.

Each is an ``Analyser`` registered under the entry-point group ``ecoin.analysers`` (see
pyproject.toml), exactly like a third-party one. Values are already checked finite numbers
(1 to 512 of them); sums use ``math.fsum`` so large and small values do not lose precision.
"""

from __future__ import annotations

import math
from typing import Any

from .plugins import READINGS_SCHEMA, Analyser


def _values(readings: dict[str, Any]) -> list[float]:
    return [float(v) for v in readings["values"]]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (divides by n: the readings are the whole set).
    Computed on values scaled into [-1, 1], so values near the float limit cannot overflow."""
    n = len(values)
    scale = max(abs(v) for v in values)
    if scale == 0:
        return 0.0, 0.0
    x = [v / scale for v in values]
    mean = math.fsum(x) / n
    return mean * scale, math.sqrt(math.fsum((v - mean) ** 2 for v in x) / n) * scale


def average(readings: dict[str, Any]) -> float:
    values = _values(readings)
    try:
        return math.fsum(values) / len(values)
    except OverflowError:  # a sum beyond the float range: the scaled mean cannot overflow
        return _mean_std(values)[0]


def stats(readings: dict[str, Any]) -> dict[str, Any]:
    values = _values(readings)
    mean, std = _mean_std(values)
    return {"count": len(values), "min": min(values), "max": max(values), "mean": mean, "std": std}


def size(readings: dict[str, Any]) -> int:
    return len(readings["values"])


def anomaly(readings: dict[str, Any], k: float = 3.0) -> dict[str, Any]:
    """Indices of the values more than k standard deviations from the mean. With a standard
    deviation of zero nothing is an anomaly."""
    values = _values(readings)
    mean, std = _mean_std(values)
    far = [i for i, v in enumerate(values) if std > 0 and abs(v - mean) > k * std]
    return {"k": k, "mean": mean, "std": std, "count": len(far), "indices": far}


def _anomaly_schema() -> dict[str, Any]:
    schema = {**READINGS_SCHEMA, "properties": dict(READINGS_SCHEMA["properties"])}
    schema["properties"]["values"] = {**schema["properties"]["values"], "minItems": 2}
    return schema


AVERAGE = Analyser("average", "Arithmetic mean of the values.", average)
STATS = Analyser(
    "stats",
    "Count, minimum, maximum, mean and (population) standard deviation of the values.",
    stats,
)
SIZE = Analyser("size", "Number of values in the readings.", size)
ANOMALY = Analyser(
    "anomaly",
    "Indices of the values more than k standard deviations from the mean (k is an option, default 3).",
    anomaly,
    schema=_anomaly_schema(),
    options={"k": 3.0},
)

ALL = (AVERAGE, STATS, SIZE, ANOMALY)

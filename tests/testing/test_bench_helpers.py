"""The pure helpers benchmarks read their figures with: a histogram quantile between two
scrapes, and the summary of a py-spy profile."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ecoin.testing import metrics, profile


def _scrape(registry: CollectorRegistry) -> dict[str, float]:
    return metrics.parse(generate_latest(registry).decode())


def test_quantile_counts_only_what_was_observed_between_the_scrapes() -> None:
    r = CollectorRegistry()
    h = Histogram("x_seconds", "x", ["route"], buckets=(0.01, 0.1, 1.0), registry=r)
    for _ in range(1000):
        h.labels("redeem").observe(0.5)  # before: slow, must not count
    before = _scrape(r)
    for _ in range(99):
        h.labels("redeem").observe(0.005)
    h.labels("redeem").observe(0.05)
    h.labels("other").observe(5.0)  # another series, not asked for
    after = _scrape(r)
    assert metrics.quantile(after, before, "x_seconds", 0.5, route="redeem") == 0.01
    assert metrics.quantile(after, before, "x_seconds", 0.99, route="redeem") == 0.01
    assert metrics.quantile(after, before, "x_seconds", 1.0, route="redeem") == 0.1
    assert metrics.quantile(after, before, "x_seconds", 1.0, route="other") == math.inf
    assert math.isnan(metrics.quantile(after, after, "x_seconds", 0.99, route="redeem"))


def test_profile_summary_shares_own_time_by_function_and_thread() -> None:
    collapsed = "\n".join(
        [
            "proc;thread (1): paho;loop (a.py:1);read (a.py:2) 3",
            "proc;thread (2): op_0;run (b.py:1) 1",
            "garbage line",
        ]
    )
    text = profile.summary(collapsed)
    assert text.startswith("4 samples")
    assert "  75.0%  proc;thread (1): paho" in text
    assert "  75.0%  read (a.py:2)" in text
    assert "  25.0%  run (b.py:1)" in text

"""Reading Prometheus metrics the way a scraper does: from the exposition text, never from
a client library's private attributes."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[str, float]:
    """Every sample, keyed ``name{label="value",...}`` (labels sorted), e.g.
    ``ecoin_gateway_errors_total{kind="timeout"}``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def metric(source: Any, key: str) -> float:
    """One sample of ``source``'s registry, read from its exposition text: a service's
    ``Metrics`` (``.registry``) or a service holding one (``.metrics``: a Gateway, Bank,
    Analyst or Redeemer); 0 if it has not been observed yet."""
    registry = source.registry if hasattr(source, "registry") else source.metrics.registry
    return parse(generate_latest(registry).decode()).get(key, 0.0)


def fetch(port: int) -> dict[str, float]:
    """Every sample of the ``/metrics`` page a service serves on loopback ``port``."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse(r.read().decode())


def quantile(after: dict[str, float], before: dict[str, float], name: str, q: float, **labels: str) -> float:
    """The ``q`` quantile (0..1) of histogram ``name`` over the observations between two
    scrapes, as the upper bound of the bucket it falls in (what a histogram can say), in the
    histogram's unit; NaN if nothing was observed. ``labels`` pick one series."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        if not key.startswith(name + "_bucket{") or not all(w in key for w in want):
            continue
        le = key.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float(le), value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")

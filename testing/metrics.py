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

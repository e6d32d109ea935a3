"""Prometheus metrics of the analyst, served on a plain HTTP port (loopback by default)."""

from __future__ import annotations

from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from ecoin.common import health

REGISTRY = CollectorRegistry()
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

OPERATIONS = Counter(
    "ecoin_analyst_operations",
    "Operations finished, by service and outcome (ok, or the reason of the failure)",
    ["service", "outcome"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "ecoin_analyst_rejected",
    "Messages refused before redemption (garbage, truncated, oversized, wrong service or reply topic)",
    ["service", "reason"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "ecoin_analyst_duplicates", "Operations delivered again and not answered again", registry=REGISTRY
)
REDEMPTIONS = Counter(
    "ecoin_analyst_redemptions",
    "Headers sent to the bank, by result (ok, a refusal code, bank_unreachable, bank_error)",
    ["result"],
    registry=REGISTRY,
)
BANK_RETRIES = Counter(
    "ecoin_analyst_bank_retries", "Redeem calls retried after an outage", registry=REGISTRY
)
BANK_SECONDS = Histogram(
    "ecoin_analyst_bank_seconds", "Time of one redeem call (a batch)", buckets=_FAST, registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "ecoin_analyst_batch_size",
    "Headers per redeem call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
ANALYSIS_SECONDS = Histogram(
    "ecoin_analyst_analysis_seconds",
    "Round trip to an analyser worker (not the wait for a free one), by service",
    ["service"],
    buckets=_FAST,
    registry=REGISTRY,
)
OPERATION_SECONDS = Histogram(
    "ecoin_analyst_operation_seconds",
    "From arrival to reply, by service",
    ["service"],
    buckets=_FAST,
    registry=REGISTRY,
)
CRYPTO_SECONDS = Histogram(
    "ecoin_analyst_crypto_seconds",
    "Time to check and decrypt an operation and seal its result",
    buckets=_FAST,
    registry=REGISTRY,
)
REPLY_SECONDS = Histogram(
    "ecoin_analyst_reply_seconds",
    "From publishing a reply to the broker's acknowledgement",
    buckets=_FAST,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("ecoin_analyst_in_flight", "Operations received and not yet answered", registry=REGISTRY)
CONNECTED = Gauge(
    "ecoin_analyst_connected",
    "1 while the broker connection of a service is up",
    ["service"],
    registry=REGISTRY,
)
WORKERS_REPLACED = Counter(
    "ecoin_analyst_workers_replaced", "Analyser workers killed (time limit) or found dead", registry=REGISTRY
)


def serve(
    host: str, port: int, status: Callable[[], dict[str, Any]] = lambda: {"ok": True}
) -> ThreadingHTTPServer:
    """Starts /metrics and /healthz (``status()``, 503 unless its "ok") in a daemon thread;
    returns the server (``shutdown()``)."""
    return health.serve(host, port, REGISTRY, status)

"""Prometheus metrics of the bank, served on a plain HTTP port (loopback by default)."""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Histogram

from ecoin.common import health

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "ecoin_bank_requests",
    "API requests answered, by route and status",
    ["route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "ecoin_bank_request_seconds",
    "Time to answer an API request",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
REDEMPTIONS = Counter(
    "ecoin_bank_redemptions",
    "Redemption items, by result (ok or refusal code)",
    ["result"],
    registry=REGISTRY,
)
TLS_REFUSED = Counter(
    "ecoin_bank_tls_refused", "TLS handshakes refused (no or bad client certificate)", registry=REGISTRY
)

CONNECTIONS_REFUSED = Counter(
    "ecoin_bank_connections_refused",
    "Connections closed at once, by limit (max_connections, per_client)",
    ["limit"],
    registry=REGISTRY,
)
DEADLINES = Counter(
    "ecoin_bank_deadlines",
    "Requests ended by a deadline or a size limit, by which (body_timeout, too_large)",
    ["limit"],
    registry=REGISTRY,
)


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """Starts /metrics and /healthz in a daemon thread; returns the server."""
    return health.serve(host, port, REGISTRY)

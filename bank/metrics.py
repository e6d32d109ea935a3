"""Prometheus metrics of the bank, in a registry of its own: each ``Bank`` makes one
``Metrics`` and hands it to the parts that count, so several banks can live in one process
(tests) without sharing a count. Served on a plain HTTP port (loopback by default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "ecoin_bank_requests",
            "API requests answered, by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ecoin_bank_request_seconds",
            "Time to answer an API request",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.redemptions = Counter(
            "ecoin_bank_redemptions",
            "Redemption items, by result (ok or refusal code)",
            ["result"],
            registry=r,
        )
        self.tls_refused = Counter(
            "ecoin_bank_tls_refused", "TLS handshakes refused (no or bad client certificate)", registry=r
        )
        self.connections_refused = Counter(
            "ecoin_bank_connections_refused",
            "Connections closed at once, by limit (max_connections, per_client)",
            ["limit"],
            registry=r,
        )
        self.deadlines = Counter(
            "ecoin_bank_deadlines",
            "Requests ended by a deadline or a size limit, by which (body_timeout, too_large)",
            ["limit"],
            registry=r,
        )

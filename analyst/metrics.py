"""Prometheus metrics of the analyst, in a registry of its own: each ``Analyst`` makes one
``Metrics`` and hands it to the parts that count (links, redeemer), so several analysts can
live in one process (tests) without sharing a count. Served on a plain HTTP port (loopback
by default) by ``ecoin-analyst serve``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.operations = Counter(
            "ecoin_analyst_operations",
            "Operations finished, by service and outcome (ok, or the reason of the failure)",
            ["service", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "ecoin_analyst_rejected",
            "Messages refused before redemption "
            "(garbage, truncated, oversized, wrong service or reply topic)",
            ["service", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "ecoin_analyst_duplicates", "Operations delivered again and not answered again", registry=r
        )
        self.redemptions = Counter(
            "ecoin_analyst_redemptions",
            "Headers sent to the bank, by result (ok, a refusal code, bank_unreachable, bank_error)",
            ["result"],
            registry=r,
        )
        self.bank_retries = Counter(
            "ecoin_analyst_bank_retries", "Redeem calls retried after an outage", registry=r
        )
        self.bank_seconds = Histogram(
            "ecoin_analyst_bank_seconds", "Time of one redeem call (a batch)", buckets=_FAST, registry=r
        )
        self.batch_size = Histogram(
            "ecoin_analyst_batch_size",
            "Headers per redeem call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.analysis_seconds = Histogram(
            "ecoin_analyst_analysis_seconds",
            "Round trip to an analyser worker (not the wait for a free one), by service",
            ["service"],
            buckets=_FAST,
            registry=r,
        )
        self.operation_seconds = Histogram(
            "ecoin_analyst_operation_seconds",
            "From arrival to reply, by service",
            ["service"],
            buckets=_FAST,
            registry=r,
        )
        self.crypto_seconds = Histogram(
            "ecoin_analyst_crypto_seconds",
            "Time to check and decrypt an operation and seal its result",
            buckets=_FAST,
            registry=r,
        )
        self.reply_seconds = Histogram(
            "ecoin_analyst_reply_seconds",
            "From publishing a reply to the broker's acknowledgement",
            buckets=_FAST,
            registry=r,
        )
        self.in_flight = Gauge(
            "ecoin_analyst_in_flight", "Operations received and not yet answered", registry=r
        )
        self.connected = Gauge(
            "ecoin_analyst_connected",
            "1 while the broker connection of a service is up",
            ["service"],
            registry=r,
        )
        self.workers_replaced = Counter(
            "ecoin_analyst_workers_replaced", "Analyser workers killed (time limit) or found dead", registry=r
        )

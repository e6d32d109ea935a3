"""The gateway's Prometheus metrics, in a registry of its own (several gateways can live in
one test process). Children are bound once: the hot path only increments.

Labels come from their source of truth, not from lists kept in step: the error kinds are
the names of wire.py's ``E_*`` codes (``E_FAILED`` -> ``failed``), so a new code is counted
without touching this file; the frame kinds are the router's own words, bound on first use
(those below are bound, at 0, from the start), so a new frame type is counted likewise.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ecoin.protocol import wire

# ERROR code -> its metric label: the lower-case name of its wire.E_* constant.
ERROR_KIND = {
    code: name[2:].lower()
    for name, code in vars(wire).items()
    if name.startswith("E_") and isinstance(code, int) and code in wire.ERROR_CODES
}
ERROR_KINDS = tuple(ERROR_KIND[code] for code in wire.ERROR_CODES)
IN_KINDS = ("operation", "query", "topup")  # the frame types a device sends today
OUT_KINDS = ("result", "error", "status", "topup")  # the frame types a device is sent today
SOURCES = ("mqtt", "serial", "reply")
LINKS = ("edge", "upstream")


class Children(dict[str, Any]):
    """A labelled metric's children by label, each bound once; an unknown label is bound when
    first used instead of failing the hot path with a KeyError."""

    def __init__(self, metric: Counter, labels: tuple[str, ...]) -> None:
        super().__init__((k, metric.labels(k)) for k in labels)
        self._metric = metric

    def __missing__(self, label: str) -> Any:
        child = self[label] = self._metric.labels(label)
        return child


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        frames_in = Counter("ecoin_gateway_ops_in", "Frames accepted from devices", ["kind"], registry=r)
        frames_out = Counter("ecoin_gateway_ops_out", "Frames sent to devices", ["kind"], registry=r)
        errors = Counter(
            "ecoin_gateway_errors", "ERROR frames the gateway sent, by code", ["kind"], registry=r
        )
        malformed = Counter("ecoin_gateway_malformed", "Malformed frames dropped", ["source"], registry=r)
        self.frames_in = Children(frames_in, IN_KINDS)
        self.frames_out = Children(frames_out, OUT_KINDS)
        self.errors = {k: errors.labels(k) for k in ERROR_KINDS}
        self.malformed = {k: malformed.labels(k) for k in SOURCES}
        self.forwarded = Counter("ecoin_gateway_forwarded", "Operations published upstream", registry=r)
        self.duplicates = Counter("ecoin_gateway_duplicates", "Repeated operations ignored", registry=r)
        self.late_replies = Counter(
            "ecoin_gateway_late_replies",
            "Replies too late, over the bound, or for no operation of ours",
            registry=r,
        )
        self.late_relayed = Counter(
            "ecoin_gateway_late_relayed",
            "RESULTs relayed after their deadline, in the grace period (the device settles its doubt)",
            registry=r,
        )
        self.undeliverable = Counter(
            "ecoin_gateway_undeliverable", "Answers that found no way to their device", registry=r
        )
        self.callback_errors = Counter(
            "ecoin_gateway_callback_errors", "Unexpected exceptions caught in handlers", registry=r
        )
        self.queue_depth = Gauge("ecoin_gateway_queue_depth", "Operations waiting in the queue", registry=r)
        self.queue_bytes = Gauge("ecoin_gateway_queue_bytes", "Bytes of frames in the queue", registry=r)
        self.pending = Gauge(
            "ecoin_gateway_pending", "Operations awaited until their deadline (answered or not)", registry=r
        )
        self.latency = Histogram(
            "ecoin_gateway_latency_seconds",
            "From a device's frame to its answer",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        link_up = Gauge("ecoin_gateway_link_up", "1 while a broker connection is up", ["link"], registry=r)
        reconnects = Counter("ecoin_gateway_reconnects", "Broker connections made", ["link"], registry=r)
        self.link_up = {k: link_up.labels(k) for k in LINKS}
        self.reconnects = {k: reconnects.labels(k) for k in LINKS}
        serial_up = Gauge("ecoin_gateway_serial_up", "1 while a serial port is open", ["device"], registry=r)
        self.serial_up = serial_up
        self.serial_reopens = Counter(
            "ecoin_gateway_serial_opens", "Serial port opens", ["device"], registry=r
        )

"""Prometheus metrics of the bank, served on a plain HTTP port (loopback by default)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

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


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, json.dumps({"ok": True}).encode(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(host: str, port: int) -> ThreadingHTTPServer:
    """Starts the metrics server in a daemon thread; returns it (``shutdown()`` stops it)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server

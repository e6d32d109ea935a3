"""A plain HTTP server (loopback by default) for ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, status: Callable[[], dict[str, Any]]
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/metrics":
                    outer._reply(self, 200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif self.path == "/healthz":
                    state = status()
                    code = 200 if state.get("ok") else 503
                    outer._reply(self, code, "application/json", json.dumps(state).encode())
                else:
                    outer._reply(self, 404, "text/plain", b"not found\n")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # scrapes are not events

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, code: int, ctype: str, body: bytes) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""The plain HTTP endpoint every ecoin service runs beside its real work (loopback by
default): Prometheus ``/metrics`` and a JSON ``/healthz`` (200 when ``ok``, else 503)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Status = Callable[[], dict[str, Any]]

log = logging.getLogger("ecoin.health")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A prober that gave up (a health check's timeout) is no error; anything else is
        one structured line, not http.server's traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log.warning("health_request_failed", extra={"error": repr(exc)})


def _always_ok() -> dict[str, Any]:
    return {"ok": True}


def serve(
    host: str, port: int, registry: CollectorRegistry, status: Status = _always_ok
) -> ThreadingHTTPServer:
    """Starts the server in a daemon thread and returns it (``shutdown()`` and
    ``server_close()`` stop it; ``server_address[1]`` is the port when 0 was asked)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                state = status()
                self._send(200 if state.get("ok") else 503, "application/json", json.dumps(state).encode())
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes are not events

    try:
        server = Server((host, port), Handler)
    except OSError as exc:  # "Address already in use" alone does not say which one
        raise OSError(
            exc.errno, f"metrics and /healthz: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server

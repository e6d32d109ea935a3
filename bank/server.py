"""The bank's HTTPS server: mutual TLS, HTTP/1.1 keep-alive, JSON bodies.

One thread per connection (``ThreadingHTTPServer``); the TLS handshake runs in that thread,
so a slow or hostile client never stalls the accept loop. The client certificate must come
from the project CA (``ecoin.common.tls.server_context``); its CN and OU are the caller's identity
and role for every request on the connection. RSA decryption runs in the ``Opener``'s
worker processes, so a batch uses every core while this process speaks HTTP and SQL.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ecoin.common import bank_errors as errors
from ecoin.common import logs, tls

from . import metrics
from .keys import Opener
from .ledger import Ledger
from .router import BODY_MAX, Router, error_body
from .settings import BankSettings, open_store
from .vault import Vault

log = logging.getLogger("ecoin.bank")

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0  # a keep-alive connection idle this long is closed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ecoin-bank/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    server: BankServer

    def setup(self) -> None:
        super().setup()
        try:
            self.who = tls.peer_identity(self.connection)
        except tls.PeerIdentityError:
            self.who = ("", "")  # no role: every call answers 403

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        started = time.perf_counter()
        try:
            raw = self._body()
        except errors.BankError as exc:
            self.close_connection = True
            name, status, body = "unknown", exc.status, error_body(exc)
        else:
            name, status, body = self.server.router.handle(method, self.path, self.who, raw)
        self._send(status, body)
        metrics.REQUESTS.labels(name, str(status)).inc()
        metrics.LATENCY.labels(name).observe(time.perf_counter() - started)
        if name == "redeem" and status == 200:
            _count_redemptions(body["results"])

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise errors.Malformed("send the body with a Content-Length, not chunked")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise errors.Malformed("bad Content-Length") from None
        if length < 0:
            raise errors.Malformed("bad Content-Length")
        if length > BODY_MAX:
            raise errors.TooLarge(f"the body is {length} bytes; at most {BODY_MAX}")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Unparseable HTTP: answered in the API's JSON error shape, then closed."""
        self.close_connection = True
        self._send(code, {"error": {"code": "malformed", "message": message or "bad HTTP request"}})

    def log_message(self, format: str, *args: object) -> None:
        pass


def _count_redemptions(results: list[dict[str, Any]]) -> None:
    tally: dict[str, int] = {}
    for r in results:
        key = r.get("code", "ok")
        tally[key] = tally.get(key, 0) + 1
    for key, n in tally.items():
        metrics.REDEMPTIONS.labels(key).inc(n)


class BankServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], router: Router, context: ssl.SSLContext) -> None:
        self.router = router
        self.context = context
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: the handshake first, then the HTTP exchanges."""
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError:
            return
        try:
            conn.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            metrics.TLS_REFUSED.inc()
            reason = getattr(exc, "reason", None) or str(exc)
            log.info("tls_refused", extra={"peer": client_address[0], "reason": reason})
            _linger(conn)
            return
        try:
            _Handler(conn, client_address, self)
        except OSError:
            pass  # the client went away mid-exchange: nothing to answer
        finally:
            _linger(conn)


def _linger(conn: ssl.SSLSocket) -> None:
    """Closes a connection gently ("lingering close"). A client may still be sending when we
    close: its request after a TLS 1.3 handshake we refused, or the rest of a body we refused
    as too large. Closing with that data unread would reset the connection, and the client
    would see "connection reset" instead of our alert or our 413. So: end our side, read
    (and drop) whatever it still sends, for a second at most, then close."""
    try:
        conn.settimeout(1.0)
        socket.socket.shutdown(conn, socket.SHUT_WR)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and socket.socket.recv(conn, 65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


class Bank:
    """Everything ``ecoin-bank serve`` runs, built from the settings."""

    def __init__(self, settings: BankSettings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.store.ready()  # refuses a ledger of another schema version
        vault = Vault.load(settings.master_key)
        self.opener = Opener(settings.pki, settings.worker_count())
        self.ledger = Ledger(self.store, vault, self.opener, settings.coin_expiry_days)
        cert, key, ca = settings.tls_paths()
        self.server = BankServer(
            (settings.listen, settings.port), Router(self.ledger), tls.server_context(cert, key, ca)
        )
        self.metrics = (
            metrics.serve(settings.metrics_listen, settings.metrics_port) if settings.metrics_port else None
        )
        self._stop = threading.Event()

    def serve(self) -> None:
        expiry = threading.Thread(target=self._expire_loop, name="expiry", daemon=True)
        expiry.start()
        s = self.settings
        log.info(
            "bank_started",
            extra={
                "listen": s.listen,
                "port": self.server.server_address[1],
                "metrics_port": s.metrics_port,
                "db": "postgresql" if s.postgres else "sqlite",
                "workers": s.worker_count(),
                "coin_kids": sorted(k.hex() for k in self.opener.keys.keys),
            },
        )
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()
        threading.Thread(target=self.server.shutdown, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.server_close()
        if self.metrics:
            self.metrics.shutdown()
        self.opener.close()
        self.store.close()
        log.info("bank_stopped")

    def _expire_loop(self) -> None:
        every = self.settings.expire_every_s
        while every > 0 and not self._stop.wait(every):
            try:
                n = self.ledger.expire()
                if n:
                    log.info("coins_expired", extra={"coins": n})
            except errors.BankError as exc:
                log.warning("expiry_failed", extra={"code": exc.code, "reason": exc.message})


def run(settings: BankSettings) -> int:
    logs.setup(settings.log_level)
    bank = Bank(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bank.stop())
    bank.serve()
    return 0

"""The bank's HTTPS server: aiohttp behind our own TLS acceptor (``accept.py``).

Why aiohttp, and which limit does what, is in docs/BANK_API.md ("Limits"). In short: one
event loop holds every connection (a slow or idle one costs a few kilobytes, not a
thread); aiohttp's parser (llhttp) is strict and bounds request lines, header fields and
their number; its keep-alive timer closes a connection that has not sent a complete header
block within ``idle_timeout_s`` of connecting or of its last answer (slowloris); a body
must come within ``body_timeout_s`` and be at most 1 MiB.

A request's work (the ledger's SQL, the RSA of a redemption) runs in a thread of a
bounded pool, at most ``requests_per_client`` at a time per caller (the others wait in
the event loop, at no cost to anyone else), and the RSA itself in the ``Opener``'s worker
processes, where a fair queue serves callers in turn (``fair.py``). The ledger and the
router are the same synchronous code as before; their answers are the API's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from ecoin.common import bank_errors as errors
from ecoin.common import health, logs, tls

from . import accept, claims_api, keys
from .keys import Opener
from .ledger import Ledger
from .metrics import Metrics
from .router import BODY_MAX, CSV, Identity, Router, error_body
from .settings import BankSettings, open_store
from .vault import Vault

log = logging.getLogger("ecoin.bank")

# aiohttp's parser limits: our clients send a short request line and a handful of short
# headers, so a connection's unfinished header block stays under 32 KiB; past any of these
# the request is answered 400 and the connection closed.
MAX_LINE = 2048
MAX_FIELD = 2048
MAX_HEADERS = 16
GIL_SWITCH_S = 0.0005


class Bank:
    """Everything ``ecoin-bank serve`` runs, built from the settings."""

    def __init__(self, settings: BankSettings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.store.ready()  # refuses a ledger of another schema version
        vault = Vault.load(settings.master_key)
        self.opener = Opener(settings.pki, settings.worker_count())
        self.ledger = Ledger(self.store, vault, self.opener, settings.coin_expiry_days)
        self.router = Router(self.ledger, claims_api.ROUTES)
        cert, key, ca = settings.tls_paths()
        self.context = tls.server_context(cert, key, ca)
        self.threads = ThreadPoolExecutor(settings.threads, thread_name_prefix="request")
        self.metrics = Metrics()
        self._metrics_http = (
            health.serve(settings.metrics_listen, settings.metrics_port, self.metrics.registry)
            if settings.metrics_port
            else None
        )
        self.port = settings.port
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._slots: dict[Identity, asyncio.Semaphore] = {}

    # Life cycle.

    def serve(self) -> None:
        expiry = threading.Thread(target=self._expire_loop, name="expiry", daemon=True)
        expiry.start()
        try:
            asyncio.run(self._serve())
        finally:
            self.close()

    async def _serve(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopping.set)
        limits = accept.ConnectionLimits(
            s.max_connections, s.max_connections_per_client, s.handshake_timeout_s
        )
        server = accept.BankServer(
            self._handle,
            limits,
            self.metrics,
            keepalive_timeout=s.idle_timeout_s,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            max_headers=MAX_HEADERS,
            auto_decompress=False,  # no compressed bodies: nothing to inflate past the size check
            access_log=None,
            lingering_time=2.0,  # reads (and drops) the rest of a refused body: no reset
        )
        listener = await accept.listen(server, self.context, s.listen, s.port)
        self.port = int(listener.sockets[0].getsockname()[1])
        self._started()
        await self._stopping.wait()
        listener.close()
        await server.shutdown(timeout=5.0)

    def _started(self) -> None:
        s = self.settings
        log.info(
            "bank_started",
            extra={
                "listen": s.listen,
                "port": self.port,
                "metrics_port": s.metrics_port,
                "db": "postgresql" if s.postgres else "sqlite",
                "workers": s.worker_count(),
                "coin_kids": sorted(k.hex() for k in self.opener.keys.keys),
            },
        )

    def stop(self) -> None:
        """From any thread."""
        self._stop.set()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def close(self) -> None:
        self._stop.set()
        self.threads.shutdown(wait=True, cancel_futures=True)
        if self._metrics_http:
            self._metrics_http.shutdown()
        self.opener.close()
        self.store.close()
        log.info("bank_stopped")

    # One request.

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        who = accept.identity(request.transport) if request.transport else ("", "")
        try:
            raw = await self._body(request)
        except errors.TooSlow as exc:  # answered, then closed: no lingering for a trickle
            return await self._answer_and_close(request, exc)
        except errors.BankError as exc:
            name, status, body, close = "unknown", exc.status, error_body(exc), True
        else:
            async with self._slot(who):  # per caller: the others' requests do not wait for these
                loop = asyncio.get_running_loop()
                call = (request.method, request.raw_path, who, raw)
                name, status, body = await loop.run_in_executor(self.threads, self._call, *call)
            close = False
        if status == 200 and CSV in body:  # a statement asked for as CSV
            response = web.Response(text=body[CSV], status=status, content_type=CSV)
        else:
            data = json.dumps(body, separators=(",", ":")).encode()
            response = web.Response(body=data, status=status, content_type="application/json")
        response.headers["Server"] = "ecoin-bank/1"
        if close:
            response.force_close()
        self.metrics.requests.labels(name, str(status)).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - started)
        if name == "redeem" and status == 200:
            _count_redemptions(self.metrics.redemptions, body["results"])
        return response

    async def _answer_and_close(self, request: web.BaseRequest, exc: errors.BankError) -> web.StreamResponse:
        data = json.dumps(error_body(exc)).encode()
        response = web.Response(body=data, status=exc.status, content_type="application/json")
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        self.metrics.requests.labels("unknown", str(exc.status)).inc()
        return response

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The body, within the size and time limits (aiohttp already refused a body whose
        framing is ambiguous or malformed)."""
        if request.version < (1, 0):  # a bare "GET /path" line: HTTP/0.9 is not spoken here
            raise errors.Malformed("bad request line: HTTP/1.1 only")
        if request.headers.get("Transfer-Encoding"):
            raise errors.Malformed("send the body with a Content-Length, not chunked")
        if len(request.headers.getall("Content-Length", ())) > 1:
            raise errors.Malformed("more than one Content-Length")
        length = request.content_length or 0
        if length > BODY_MAX:
            self.metrics.deadlines.labels("too_large").inc()
            raise errors.TooLarge(f"the body is {length} bytes; at most {BODY_MAX}")
        if not length:
            return b""
        try:
            return await asyncio.wait_for(request.read(), self.settings.body_timeout_s)
        except TimeoutError:
            self.metrics.deadlines.labels("body_timeout").inc()
            raise errors.TooSlow(f"the body did not arrive within {self.settings.body_timeout_s} s") from None

    def _slot(self, who: Identity) -> asyncio.Semaphore:
        slot = self._slots.get(who)
        if slot is None:
            slot = self._slots[who] = asyncio.Semaphore(self.settings.requests_per_client)
        return slot

    def _call(self, method: str, path: str, who: Identity, raw: bytes) -> tuple[str, int, dict[str, Any]]:
        """In a request thread: the router and ledger, with RSA queued fairly for ``who``."""
        with keys.on_behalf_of(f"{who[1]}:{who[0]}"):
            return self.router.handle(method, path, who, raw)

    def _expire_loop(self) -> None:
        every = self.settings.expire_every_s
        while every > 0 and not self._stop.wait(every):
            try:
                n = self.ledger.expire()
                if n:
                    log.info("coins_expired", extra={"coins": n})
            except errors.BankError as exc:
                log.warning("expiry_failed", extra={"code": exc.code, "reason": exc.message})


def _count_redemptions(counter: Counter, results: list[dict[str, Any]]) -> None:
    tally: dict[str, int] = {}
    for r in results:
        key = r.get("code", "ok")
        tally[key] = tally.get(key, 0) + 1
    for key, n in tally.items():
        counter.labels(key).inc(n)


def run(settings: BankSettings) -> int:
    logs.setup(settings.log_level)
    # A thread that wants the GIL waits up to this long for a busy one to let go: one
    # small request's path crosses ~6 threads (loop, request, RSA driver), so CPython's
    # 5 ms default could add tens of ms behind another caller's large batch.
    sys.setswitchinterval(GIL_SWITCH_S)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)  # its per-request debug chatter
    Bank(settings).serve()
    return 0

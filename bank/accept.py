"""Connections of the bank's API, before aiohttp takes them: caps, the TLS handshake and
its deadline, the caller's identity.

aiohttp serves HTTP on a connection once it is TLS; what happens before is ours, because
asyncio's own TLS listener drops a refused handshake without a word: no count, no log, and
not even the TLS alert, so a client whose certificate we refused would only see the
connection vanish (with TLS 1.3 it learns of the refusal after it sent its request). So
the listener accepts plain TCP and each connection goes through ``_Acceptor``:

1. over ``max_connections`` open connections (handshaking ones included): aborted at once;
2. the TLS handshake (asyncio's own TLS protocol, ``_TLS``), at most
   ``handshake_timeout_s``; a refused or timed-out handshake is counted
   (``ecoin_bank_tls_refused``) and logged with its reason, and a refused one sends its
   alert and closes gently (``_linger``), so the client reads why;
3. the verified certificate's (CN, OU) is the caller; a caller already holding
   ``max_connections_per_client`` connections is closed at once;
4. the connection is handed to aiohttp's request handler, with any bytes that arrived in
   between. From then on aiohttp parses, and enforces the header and idle deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from asyncio import sslproto
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ecoin.common import tls

from .metrics import Metrics

log = logging.getLogger("ecoin.bank")

Identity = tuple[str, str]


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 512
    max_connections_per_client: int = 32
    handshake_timeout_s: float = 10.0


class _HttpHandler(RequestHandler):
    """aiohttp's connection handler; a request its parser refused (bad request line,
    duplicate Content-Length, oversized headers...) gets the API's JSON error shape and one
    log line, not a traceback."""

    def __init__(self, manager: BankServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.metrics = manager.metrics

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is on its way: only closing is left
            raise ConnectionError("cannot answer twice")
        # The parser's words without the bytes it quotes: the log never echoes input.
        reason = (message or (str(exc) if exc else "") or "bad HTTP request").split(":", 1)[0][:200]
        if status >= 500:
            log.error("request_crashed", exc_info=exc)
            reason = "internal error; see the bank's log"
        else:
            log.info("http_refused", extra={"status": status, "reason": reason})
        code = "internal" if status >= 500 else "too_large" if status == 413 else "malformed"
        body = json.dumps({"error": {"code": code, "message": reason}}).encode()
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        self.metrics.requests.labels("unknown", str(status)).inc()
        return response


class BankServer(web.Server):
    """aiohttp's low-level server, counting established connections per caller."""

    def __call__(self) -> RequestHandler:
        return _HttpHandler(self, loop=self._loop, **self._kwargs)

    def __init__(self, handler: Any, limits: ConnectionLimits, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.metrics = metrics
        self.per_client: Counter[Identity] = Counter()
        self.handshaking = 0
        self._who: dict[RequestHandler, Identity] = {}

    @property
    def open_connections(self) -> int:
        return self.handshaking + len(self._connections)

    def admit(self, who: Identity) -> bool:
        return self.per_client[who] < self.limits.max_connections_per_client

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        who = identity(transport)
        self._who[handler] = who
        self.per_client[who] += 1

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        who = self._who.pop(handler, None)
        if who is not None:
            self.per_client[who] -= 1
            if self.per_client[who] <= 0:
                del self.per_client[who]


def identity(transport: asyncio.BaseTransport) -> Identity:
    """(CN, OU) of the verified client certificate; ("", "") (no role: every call 403)."""
    try:
        return tls.peer_identity(transport.get_extra_info("ssl_object"))
    except tls.PeerIdentityError:
        return ("", "")


class _Acceptor(asyncio.Protocol):
    """One accepted TCP connection until aiohttp takes it over (see the module's docstring)."""

    def __init__(self, server: BankServer, context: ssl.SSLContext) -> None:
        self.server = server
        self.context = context
        self.early = bytearray()  # decrypted bytes that came with the handshake's last read
        self.handler: RequestHandler | None = None
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        if self.server.open_connections >= self.server.limits.max_connections:
            self.server.metrics.connections_refused.labels("max_connections").inc()
            raw.abort()
            return
        self.server.handshaking += 1
        asyncio.get_running_loop().create_task(self._handshake(raw))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        peer = raw.get_extra_info("peername") or ("?",)
        try:
            secure = await _start_tls(raw, self, self.context, self.server.limits.handshake_timeout_s)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self.server.metrics.tls_refused.inc()
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.info("tls_refused", extra={"peer": peer[0], "reason": str(reason)[:200]})
            return
        finally:
            self.server.handshaking -= 1
        if secure is None or self.gone:
            return
        who = identity(secure)
        if not self.server.admit(who):
            self.server.metrics.connections_refused.labels("per_client").inc()
            log.info("connection_refused", extra={"caller": who[0], "role": who[1], "limit": "per_client"})
            secure.abort()
            return
        self._hand_over(secure)

    def _hand_over(self, secure: asyncio.Transport) -> None:
        handler = self.server()
        self.handler = handler
        secure.set_protocol(handler)
        handler.connection_made(secure)
        if self.early:
            handler.data_received(bytes(self.early))
            self.early.clear()

    # Until the hand-over, the TLS transport calls us.

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
        else:  # between the handshake and the hand-over: at most what one read brought
            self.early += data

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.handler is not None:
            self.handler.connection_lost(exc)


class _TLS(sslproto.SSLProtocol):
    """asyncio's TLS protocol, except after a refused handshake: asyncio would drop the
    connection with the alert unsent; this sends it and closes gently instead. Its read
    buffer is two TLS records, not asyncio's 256 KiB: that is per connection."""

    max_size = 32 * 1024

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        raw = cast(asyncio.Transport | None, self._transport)
        gone = handshake_exc is ConnectionResetError or isinstance(handshake_exc, ConnectionResetError)
        if handshake_exc is not None and not gone and raw is not None and not raw.is_closing():
            self._transport = None  # asyncio's own error path would abort it
            _linger(raw, cast(ssl.MemoryBIO, getattr(self, "_outgoing")).read())  # noqa: B009
        super()._on_handshake_complete(handshake_exc)


async def _start_tls(
    raw: asyncio.Transport, app: asyncio.Protocol, context: ssl.SSLContext, timeout: float
) -> asyncio.Transport:
    """``loop.start_tls`` with ``_TLS`` (the same steps as asyncio's)."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls_proto = _TLS(
        loop,
        app,
        context,
        waiter,
        server_side=True,
        call_connection_made=False,
        ssl_handshake_timeout=timeout,  # type: ignore[arg-type]  # typeshed says int; any number works
    )
    raw.pause_reading()
    raw.set_protocol(tls_proto)
    made = loop.call_soon(tls_proto.connection_made, raw)
    resume = loop.call_soon(raw.resume_reading)
    try:
        await waiter
    except BaseException:
        made.cancel()
        resume.cancel()
        if not raw.is_closing() and raw.get_protocol() is tls_proto:
            raw.abort()  # a deadline or a reset: nothing to tell
        raise
    return tls_proto._app_transport


class _Drain(asyncio.Protocol):
    """Reads and drops what a refused client still sends, until it closes or a second
    passes: closing with its bytes unread would reset the connection and lose our alert."""

    def __init__(self, raw: asyncio.Transport) -> None:
        self.raw = raw
        self.timer = asyncio.get_running_loop().call_later(1.0, raw.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()


def _linger(raw: asyncio.Transport, alert: bytes) -> None:
    raw.set_protocol(_Drain(raw))
    try:
        if alert:
            raw.write(alert)
        if raw.can_write_eof():
            raw.write_eof()
    except OSError:  # the client is gone already: there is no one left to tell
        raw.abort()


async def listen(
    server: BankServer, context: ssl.SSLContext, host: str, port: int, backlog: int = 128
) -> asyncio.Server:
    """Starts accepting; returns the asyncio server (``sockets[0]`` has the real port)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(lambda: _Acceptor(server, context), host, port, backlog=backlog)
    except OSError as exc:  # "Address already in use" alone does not say which one
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None

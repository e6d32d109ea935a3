"""A faulty bank in front of the real one, for the tests of an analyst and of the system
around it: a real HTTPS server with the bank's certificate from the project PKI (mutual
TLS, so the analyst's client accepts it), which either relays each call to the real bank
or fails it in one chosen way.

    faulty = FaultyBank(pki, real_bank_url, ("analyst", "alice")).start()
    faulty.mode = "handshake"   # relay, lost, handshake, 404, 500, 502

``handshake`` shows a certificate of another CA, so the client's handshake fails (what an
on-path attacker can cause); the HTTP modes answer every request with that status (502 as
a proxy's HTML page). ``lost`` relays the call and drops its answer: a bank killed after
its commit. Changing the mode drops the kept-alive connections.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from ecoin.common import tls
from ecoin.common.bank_client import split_url
from ecoin.tools import pki as pki_tool

ANSWERS = {
    "404": (404, "application/json", {"error": {"code": "not_found", "message": "no such path"}}),
    "500": (500, "application/json", {"error": {"code": "internal", "message": "internal error"}}),
    "502": (502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
}


class FaultyBank:
    def __init__(self, pki: Path, upstream: str, party: tuple[str, str], workdir: Path) -> None:
        role, name = party
        self.good = tls.server_context(pki / "bank/bank.crt", pki / "bank/bank.key", pki / "ca.crt")
        other = workdir / "impostor-pki"
        pki_tool.init(other)
        self.impostor = tls.server_context(other / "bank/bank.crt", other / "bank/bank.key", pki / "ca.crt")
        base = pki / role / name
        self.relay_ctx = tls.client_context(f"{base}.crt", f"{base}.key", pki / "ca.crt")
        self.upstream = split_url(upstream)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.calls: dict[str, int] = {}
        self._mode = "relay"
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        with self._lock:
            self._mode = value
            conns, self._conns = self._conns, set()
        for conn in conns:  # the next call needs a new connection, so a new handshake
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> FaultyBank:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self.listener.close()
        self.mode = "closed"

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock, addr), daemon=True).start()

    def _serve(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        ctx = self.impostor if self.mode == "handshake" else self.good
        sock.settimeout(10)
        try:
            conn = ctx.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        with self._lock:
            self._conns.add(conn)
        try:
            _Handler(conn, addr, self)  # type: ignore[arg-type]  # http.server wants a server: we are it
        except OSError:
            pass
        finally:
            conn.close()

    def count(self, what: str) -> None:
        with self._lock:
            self.calls[what] = self.calls.get(what, 0) + 1

    def relay(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        conn = http.client.HTTPSConnection(*self.upstream, context=self.relay_ctx, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", "application/json"), resp.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyBank  # type: ignore[assignment]

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def _answer(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        mode = self.server.mode
        self.server.count(f"{mode} {self.path}")
        if mode == "relay":
            status, ctype, data = self.server.relay(method, self.path, body)
        elif mode == "lost":  # the bank did the work; its answer never comes back
            self.server.relay(method, self.path, body)
            self.close_connection = True
            return
        elif mode in ANSWERS:
            status, ctype, content = ANSWERS[mode]
            data = content.encode() if isinstance(content, str) else json.dumps(content).encode()
        else:  # handshake or closed: this kept-alive connection is dropped unanswered
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

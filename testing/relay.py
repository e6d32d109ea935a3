"""A TCP relay on loopback in front of a real server (a broker, a bank): the network between
two real parts, which a test can cut (``cut()``), slow (``latency``) or close to new
connections (``passing``, e.g. the simulator's WiFi being down). A test that needs a
flaky network uses this instead of a fake peer; ``ecoin.sim.hardware.Radio`` is one."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable

_Line = queue.Queue[tuple[float, bytes]]  # chunks on their way, each with the time it is due


def _always() -> bool:
    return True


class Relay:
    """Listens on 127.0.0.1:``port`` and pipes every connection to ``target``. While
        ``passing()`` is false, new connections are refused (closed at once) and open ones are
        dropped; ``latency`` seconds delay every byte each way (bytes sent together arrive
    together, in order)."""

    def __init__(
        self, target: tuple[str, int], passing: Callable[[], bool] = _always, latency: float = 0.0
    ) -> None:
        self.target, self.passing, self.latency = target, passing, latency
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.05)  # how soon the accept loop sees ``passing()`` turn false
        self.port = self.srv.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"relay-{self.port}")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self.passing():
                self.cut()
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.passing():
                conn.close()  # no route: the client's connect fails
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            for c in (conn, up):
                # Only the connect is bounded: a quiet link (a client waiting for an answer,
                # a broker with nothing to say) must not look like a dead one to the relay.
                c.settimeout(None)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the broker: no Nagle
            with self._lock:
                self._conns += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                line: _Line = queue.Queue()
                threading.Thread(target=self._receive, args=(a, line), daemon=True).start()
                threading.Thread(target=self._deliver, args=(line, a, b), daemon=True).start()

    def _receive(self, src: socket.socket, line: _Line) -> None:
        """Reads src as fast as it sends, stamping every chunk with the time it is due at
        the other end: each byte arrives ``latency`` after it was sent, in order, however
        many follow it (a slow network, not a slow relay). b"" marks the end."""
        try:
            while True:
                data = src.recv(65536)
                line.put((time.monotonic() + self.latency, data))
                if not data:
                    return
        except OSError:
            line.put((0.0, b""))

    def _deliver(self, line: _Line, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                due, data = line.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # the slow network being simulated
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Breaks every connection through the relay at once (both ends see it closed)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.srv.close()
        self._thread.join(2)
        self.cut()

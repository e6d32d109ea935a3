"""One network thread for every MQTT connection of the gateway.

paho's threaded mode gives each client its own thread; an operation then crosses threads
twice (edge in, upstream out, and back), and each crossing costs a wake-up pipe write,
an extra select() and a hand-over of the interpreter lock. Measured here that capped the
gateway near 3,000 operations/s. Driving both clients from one selector thread (paho's
external-loop API: loop_read, loop_write, loop_misc) keeps the whole edge -> upstream ->
edge path in one thread with no hand-over.

Threads other than this one (serial ports, the router's worker, top-ups) only queue
packets (``on_socket_register_write`` is set, so paho never writes from the caller) and
then call ``wake``. Idle, the thread sleeps in select() and wakes once a second for the
keepalive bookkeeping.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as mqtt

log = logging.getLogger("ecoin.gateway.netloop")

MISC_S = 1.0  # keepalive bookkeeping (pings, dead-peer detection)


class NetLoop:
    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._wake_pending = False
        self._lock = threading.Lock()
        self._adds: list[tuple[mqtt.Client, Callable[[], None]]] = []
        # client -> (its socket, the events selected, what to call when it is gone)
        self._clients: dict[mqtt.Client, tuple[Any, int, Callable[[], None]]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.restarts = 0

    # Other threads.

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="netloop", daemon=True)
        self._thread.start()

    def ensure_running(self) -> None:
        """The supervisor's check: a network thread that died is started again."""
        with self._lock:  # several supervisors watch it: exactly one restarts it
            if not self._stopping and not self.alive:
                log.error("netloop_restarted")
                self.restarts += 1
                self.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def add(self, client: mqtt.Client, lost: Callable[[], None]) -> None:
        """Starts serving a client whose connect() was called; ``lost`` runs (in this
        thread) once its connection is gone."""
        client.on_socket_register_write = _noop  # paho must never write from a caller's thread
        with self._lock:
            self._adds.append((client, lost))
        self.wake()

    def wake(self) -> None:
        if self.in_loop or self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._thread:
            self._thread.join(10)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # The network thread.

    def _run(self) -> None:
        last_misc = time.monotonic()
        while not self._stopping:
            try:
                self._want_writes()  # first: drops closed sockets before their fd is reused
                self._take_adds()
                timeout = max(0.0, MISC_S - (time.monotonic() - last_misc))
                if any(_pending(c, sock) for c, (sock, _, _) in self._clients.items()):
                    timeout = 0.0
                ready = self._sel.select(timeout)
                for key, events in ready:
                    if key.data is None:
                        self._drain_wake()
                        continue
                    self._serve(key.data, events)
                for client, (sock, _, _) in list(self._clients.items()):
                    if _pending(client, sock):  # bytes already read: select() cannot see them
                        self._serve(client, selectors.EVENT_READ)
                if time.monotonic() - last_misc >= MISC_S:
                    last_misc = time.monotonic()
                    for client in list(self._clients):
                        if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                            self._drop(client)
            except Exception:  # a bug must not end the network: log, breathe, go on
                log.exception("netloop_error")
                time.sleep(0.1)
        for client in list(self._clients):
            self._drop(client)

    def _take_adds(self) -> None:
        with self._lock:
            adds, self._adds = self._adds, []
        for client, lost in adds:
            sock = client.socket()
            if sock is None:
                lost()
                continue
            try:
                self._sel.register(sock, selectors.EVENT_READ, client)
            except (KeyError, ValueError, OSError):
                log.exception("netloop_register_failed")
                lost()
                continue
            self._clients[client] = (sock, selectors.EVENT_READ, lost)

    def _want_writes(self) -> None:
        for client, (sock, events, lost) in list(self._clients.items()):
            if sock is not client.socket():  # paho closed it (disconnect, error)
                self._drop(client)
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
            if want != events:
                self._sel.modify(cast(Any, sock), want, client)
                self._clients[client] = (sock, want, lost)

    def _drain_wake(self) -> None:
        self._wake_pending = False  # before the scan: a later publish wakes us again
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _serve(self, client: mqtt.Client, events: int) -> None:
        if client not in self._clients:
            return
        rc = mqtt.MQTT_ERR_SUCCESS
        if events & selectors.EVENT_READ:
            rc = client.loop_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            self._drop(client)

    def _drop(self, client: mqtt.Client) -> None:
        entry = self._clients.pop(client, None)
        if entry is None:
            return
        sock, _, lost = entry
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            lost()
        except Exception:
            log.exception("netloop_lost_handler_failed")


def _pending(client: Any, sock: Any) -> int:
    """Bytes read off the socket but not yet handled: TLS's decrypted records and the
    client's own read buffer (link.BufferedClient)."""
    n = client.buffered() if hasattr(client, "buffered") else 0
    try:
        return n + (int(sock.pending()) if hasattr(sock, "pending") else 0)
    except (OSError, ValueError):
        return n


def _noop(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    pass

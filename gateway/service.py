"""The whole gateway: wires the router to the edge, upstream, serial ports, bank and health."""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

from ecoin.common import health
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import Config
from ecoin.gateway.correlation import Correlator
from ecoin.gateway.directory import Directory
from ecoin.gateway.edge import Edge
from ecoin.gateway.limits import DeviceLimiter
from ecoin.gateway.metrics import Metrics
from ecoin.gateway.netloop import NetLoop
from ecoin.gateway.queue import OpQueue
from ecoin.gateway.router import Router
from ecoin.gateway.serial_bridge import SerialLink
from ecoin.gateway.topup import BankClient, TopupRelay, bank_client
from ecoin.gateway.upstream import Upstream

log = logging.getLogger("ecoin.gateway")

# A thread that wants the GIL waits up to this long for a busy one to let go: the network
# thread shares the interpreter with the router's worker, the serial bridges and the health
# server, and with CPython's 5 ms default a woken network thread could wait a whole interval
# behind one of them (docs/SCALING.md 1.3; the bank and the analyst use the same value).
GIL_SWITCH_S = 0.0005


class Gateway:
    def __init__(self, cfg: Config, bank: BankClient | None = None) -> None:
        self.cfg = cfg
        self.metrics = m = Metrics()
        self.netloop = NetLoop()
        self.directory = Directory()
        # Nothing waits longer than its device does (queue.max_age_s is a cap on top).
        max_age = min(cfg.queue.max_age_s, cfg.op_timeout_s)
        self.queue = OpQueue(cfg.queue.path, cfg.queue.max_bytes, max_age)
        # The links are built first and reach the router through these bound methods; the
        # router then gets every port at construction.
        self.upstream = Upstream(
            cfg.upstream,
            cfg.gateway_id,
            self.directory,
            window=cfg.limits.window,
            on_reply=self._reply,
            on_ready=self._upstream_ready,
            on_window=self._window,
            on_lost=self._upstream_lost,
            on_error=m.callback_errors.inc,
            on_stale=m.malformed["reply"].inc,
            backoff=self._backoff(),
            netloop=self.netloop,
        )
        self.edge = Edge(
            cfg.edge,
            cfg.gateway_id,
            on_frame=self._frame,
            on_bad_topic=m.malformed["mqtt"].inc,
            on_error=m.callback_errors.inc,
            on_up=lambda: self._link_up("edge"),
            on_down=lambda: m.link_up["edge"].set(0),
            backoff=self._backoff(),
            netloop=self.netloop,
        )
        self.serial = [SerialLink(p, self._frame, m, self._backoff(cap=5.0)) for p in cfg.serial]
        if bank is None and cfg.bank.url:
            bank = bank_client(cfg.bank)
        self.topup = TopupRelay(bank, cfg.bank.workers) if bank is not None else None
        self.router = Router(
            directory=self.directory,
            queue=self.queue,
            metrics=m,
            limiter=DeviceLimiter(cfg.limits.rate_per_s, cfg.limits.burst),
            upstream=self.upstream,
            routes={"mqtt": self.edge.send, **{link.route: link.send for link in self.serial}},
            topup=self.topup,
            correlator=Correlator(self.queue.secret("correlation")),
            frame_max=cfg.limits.frame_max,
            op_timeout_s=cfg.op_timeout_s,
            replay_rate=cfg.queue.replay_rate,
            replay_burst=cfg.queue.replay_burst,
        )
        self.directory.on_change = self.router.on_window
        self.health: ThreadingHTTPServer | None = None

    def _backoff(self, cap: float | None = None) -> Backoff:
        top = self.cfg.backoff_max_s if cap is None else min(cap, self.cfg.backoff_max_s)
        return Backoff(self.cfg.backoff_min_s, top)

    def _frame(self, route: str, device: str, frame: bytes) -> None:
        self.router.handle(route, device, frame)

    def _reply(self, corr: bytes | None, frame: bytes) -> None:
        self.router.on_reply(corr, frame)

    def _window(self) -> None:
        self.router.on_window()

    def _link_up(self, name: str) -> None:
        self.metrics.link_up[name].set(1)
        self.metrics.reconnects[name].inc()

    def _upstream_ready(self) -> None:
        self._link_up("upstream")
        self.router.kick()

    def _upstream_lost(self) -> None:
        self.metrics.link_up["upstream"].set(0)
        self.router.upstream_lost()

    def start(self) -> Gateway:
        sys.setswitchinterval(GIL_SWITCH_S)
        self.netloop.start()
        self.router.start()
        self.upstream.start()
        self.edge.start()
        for link in self.serial:
            link.start()
        if self.cfg.health.port >= 0 and self.cfg.health.host:
            self.health = health.serve(
                self.cfg.health.host, self.cfg.health.port, self.metrics.registry, self.status
            )
        log.info(
            "gateway_started",
            extra={
                "gateway": self.cfg.gateway_id,
                "serial_ports": len(self.serial),
                "queued": self.queue.depth,
            },
        )
        return self

    def stop(self) -> None:
        if self.health:
            self.health.shutdown()
            self.health.server_close()
            self.health = None
        for link in self.serial:
            link.stop()
        self.edge.stop()
        self.upstream.stop()
        self.router.stop()
        self.netloop.stop()
        if self.topup:
            self.topup.stop()
        self.queue.close()
        log.info("gateway_stopped", extra={"gateway": self.cfg.gateway_id})

    def status(self) -> dict[str, Any]:
        threads_ok = (
            self.router.alive
            and self.netloop.alive
            and self.edge.link.alive
            and self.upstream.link.alive
            and all(s.alive for s in self.serial)
        )
        return {
            "ok": threads_ok,
            "gateway": self.cfg.gateway_id,
            "edge": self.edge.link.up,
            "upstream": self.upstream.link.up,
            "serial": {s.device_id: s.is_open for s in self.serial},
            "queue_depth": self.queue.depth,
            "queue_bytes": self.queue.bytes,
            "services": sorted(self.directory.services()),
            "catalog": self.directory.catalog(),  # price, description, version, schema
        }

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Where the dashboard's figures come from: the bank's API over mutual TLS, with the
dashboard's own certificate (role ``dashboard``: it may read overviews and claim or transfer
for the owner logged in, nothing else), and the services' ``/healthz`` for live status.

The bank client is synchronous (``ecoin.common.bank_client``, one kept-alive connection):
calls run in a thread, one at a time, and a page's figures are cached for a moment, so many
open pages cost the bank one request per ``refresh_s`` and figure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp

from ecoin.common.bank_client import BankClient

from .settings import DashboardSettings

T = TypeVar("T")


class Source:
    def __init__(self, settings: DashboardSettings) -> None:
        cert, key, ca = settings.tls_paths()
        self.client = BankClient(settings.bank, cert, key, ca)
        self.lock = threading.Lock()
        self.settings = settings
        self.ttl = settings.refresh_s / 2
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}

    def close(self) -> None:
        with self.lock:
            self.client.close()

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self.lock:
            return fn(*args)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, fn, *args)

    async def _cached(self, key: tuple[str, ...], fn: Callable[..., Any], *args: Any) -> Any:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        value = await self._call(fn, *args)
        self._cache[key] = (time.monotonic(), value)
        return value

    async def owner(self, name: str) -> dict[str, Any]:
        return dict(await self._cached(("owner", name), self.client.overview, name))

    async def operator(self) -> dict[str, Any]:
        return dict(await self._cached(("operator",), self.client.operator_overview))

    async def claim(self, owner: str, device_id: str, secret: str) -> dict[str, Any]:
        self._cache.pop(("owner", owner), None)
        return await self._call(self.client.claim_device, device_id, secret, owner)

    async def transfer(self, owner: str, device_id: str, to: str) -> dict[str, Any]:
        self._cache.pop(("owner", owner), None)
        self._cache.pop(("owner", to), None)
        return await self._call(self.client.transfer_device, device_id, to, owner)

    async def health(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """Each configured service's /healthz: up (200 with ok), degraded (503) or down."""
        timeout = aiohttp.ClientTimeout(total=self.settings.health_timeout_s)

        async def probe(name: str, url: str) -> dict[str, Any]:
            try:
                async with session.get(url, timeout=timeout) as r:
                    body = await r.json(content_type=None)
                    state = "up" if r.status == 200 and body.get("ok") else "degraded"
                    detail = {k: v for k, v in body.items() if k != "ok" and isinstance(v, bool | int | str)}
            except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
                state, detail = "down", {"error": type(exc).__name__}
            return {"name": name, "url": url, "state": state, "detail": detail}

        return list(await asyncio.gather(*(probe(n, u) for n, u in sorted(self.settings.health.items()))))

"""The service directory: which services have at least one live analyst.

Analysts publish a retained announcement on ``ecoin/svc/<service>/analyst/<analyst_id>`` and
their last will clears it (an empty retained message). A service is live while at least one
announcement is present.

After a reconnect the broker re-sends every retained announcement, but a removal that
happened while we were away sends nothing. So each reconnect starts a new generation; when
``synced()`` is called (the gateway sees its own status echo, which the broker queues after
the retained messages) announcements not seen in this generation are forgotten. Until then
the old view stands, so a reconnect never makes live services look unavailable.

An announcement also carries the service's terms (PROTOCOL.md 7.1): its price in coins, a
description, a version and the readings schema. The directory keeps them per analyst and
answers a QUERY with the **highest** price among the live analysts of the service: the
gateway cannot tell which of them the shared subscription will hand the operation to, and a
header below that analyst's price would be refused by the bank (nothing spent, but no
result). The price is a hint to the device, not a promise: it never pays above its own
maximum, and the bank never takes more than the coins the device put in the header.

A broker that shuts down publishes its clients' last wills on the way out, so the gateway
often sees every analyst "leave" an instant before its own connection drops. Removals seen
in the last ``GRACE_S`` before a connection loss are therefore undone (``lost``): during the
outage operations keep being queued, and the next sync settles who is really there.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from ecoin.common import topics
from ecoin.protocol import wire

FILTER = topics.ANNOUNCE_FILTER
parse_topic = topics.announcement_of
GRACE_S = 2.0
TERMS = ("price", "description", "version", "schema")  # what the directory serves per analyst


def terms_of(payload: bytes) -> dict[str, Any]:
    """The terms of an announcement. A price that is missing or not 1 to 255 reads as 1 (an
    analyst before prices); an announcement that is not a JSON object has no other terms."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    terms = {k: body[k] for k in TERMS if k in body}
    price = terms.get("price")
    if type(price) is not int or not 1 <= price <= wire.PRICE_MAX:
        terms["price"] = 1
    return terms


class Directory:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}  # (service, analyst) -> generation
        self._removed: dict[tuple[str, str], tuple[int, float]] = {}  # -> (generation, when)
        self._generation = 0
        self._live: frozenset[str] = frozenset()  # read on every operation: kept ready
        self._terms: dict[tuple[str, str], dict[str, Any]] = {}  # (service, analyst) -> terms
        self._prices: dict[str, int] = {}  # service -> the highest live price, kept ready
        self.synced_now = False  # the view is complete for the current connection
        self.on_change: Callable[[], None] = lambda: None  # the router's wake-up
        self._lock = threading.Lock()

    def _update(self) -> None:
        self._live = frozenset(s for s, _ in self._seen)
        prices: dict[str, int] = {}
        for key in self._seen:
            price = self._terms.get(key, {}).get("price", 1)
            prices[key[0]] = max(prices.get(key[0], 1), price)
        self._prices = prices

    def announce(self, topic: str, payload: bytes) -> bool:
        """Applies one announcement message; False if the topic was not an announcement."""
        key = parse_topic(topic)
        if key is None:
            return False
        with self._lock:
            if payload:
                self._seen[key] = self._generation
                self._terms[key] = terms_of(payload)
            elif key in self._seen:
                self._removed[key] = (self._seen.pop(key), time.monotonic())
            self._update()
        self.on_change()
        return True

    def reconnected(self) -> None:
        with self._lock:
            self._generation += 1
            self.synced_now = False

    def lost(self) -> None:
        """The upstream connection dropped: undo removals of the last GRACE_S seconds."""
        now = time.monotonic()
        with self._lock:
            for key, (generation, when) in self._removed.items():
                if now - when <= GRACE_S and key not in self._seen:
                    self._seen[key] = generation
            self._removed.clear()
            self._update()

    def synced(self) -> None:
        with self._lock:
            self._seen = {k: g for k, g in self._seen.items() if g == self._generation}
            self._terms = {k: t for k, t in self._terms.items() if k in self._seen}
            self._removed.clear()
            self._update()
            self.synced_now = True
        self.on_change()

    def is_live(self, service: str) -> bool:
        return service in self._live

    def live(self) -> frozenset[str]:
        return self._live

    def price(self, service: str) -> int:
        """The price a QUERY is answered with: the highest among the live analysts."""
        return self._prices.get(service, 1)

    def catalog(self) -> dict[str, dict[str, Any]]:
        """Per live service: its price and, per analyst, the terms it announced."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for (service, analyst), _ in sorted(self._seen.items()):
                entry = out.setdefault(service, {"price": self._prices.get(service, 1), "analysts": {}})
                entry["analysts"][analyst] = dict(self._terms.get((service, analyst), {"price": 1}))
            return out

    def services(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for service, analyst in self._seen:
                out.setdefault(service, []).append(analyst)
        return out

"""The service directory: which services have at least one live analyst.

Analysts publish a retained announcement on ``ecoin/svc/<service>/analyst/<analyst_id>`` and
their last will clears it (an empty retained message). A service is live while at least one
announcement is present.

After a reconnect the broker re-sends every retained announcement, but a removal that
happened while we were away sends nothing. So each reconnect starts a new generation; when
``synced()`` is called (the gateway sees its own status echo, which the broker queues after
the retained messages) announcements not seen in this generation are forgotten. Until then
the old view stands, so a reconnect never makes live services look unavailable.
"""

from __future__ import annotations

import threading

from ecoin.protocol import wire

PREFIX = "ecoin/svc/"
FILTER = "ecoin/svc/+/analyst/+"


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(service, analyst) of an announcement topic, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "ecoin" or parts[1] != "svc" or parts[3] != "analyst":
        return None
    try:
        wire.service_name(parts[2])
        wire.device_id(parts[4])  # same alphabet as analyst ids
    except ValueError:
        return None
    return parts[2], parts[4]


class Directory:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}  # (service, analyst) -> generation
        self._generation = 0
        self._live: frozenset[str] = frozenset()  # read on every operation: kept ready
        self._lock = threading.Lock()

    def _update(self) -> None:
        self._live = frozenset(s for s, _ in self._seen)

    def announce(self, topic: str, payload: bytes) -> bool:
        """Applies one announcement message; False if the topic was not an announcement."""
        key = parse_topic(topic)
        if key is None:
            return False
        with self._lock:
            if payload:
                self._seen[key] = self._generation
            else:
                self._seen.pop(key, None)
            self._update()
        return True

    def reconnected(self) -> None:
        with self._lock:
            self._generation += 1

    def synced(self) -> None:
        with self._lock:
            self._seen = {k: g for k, g in self._seen.items() if g == self._generation}
            self._update()

    def is_live(self, service: str) -> bool:
        return service in self._live

    def services(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for service, analyst in self._seen:
                out.setdefault(service, []).append(analyst)
        return out

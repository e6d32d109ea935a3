"""The waiting list: operations published upstream, awaited until their deadline.

Each is found by its correlation data when a reply comes. It stays until its deadline even
after a reply, because every well-formed reply is relayed (at most ``REPLIES_MAX``): any
analyst may write to the reply topic, so a forged first RESULT must not end a paid operation;
the device keeps waiting for one whose tag it can verify (PROTOCOL 4.2). At the deadline an
operation that got no reply at all is handed back for its ERROR TIMEOUT.
"""

from __future__ import annotations

import heapq
import itertools
import threading

from ecoin.gateway.records import Pending

REPLIES_MAX = 4  # relayed per operation; a flood of replies ends here


class Awaiting:
    """Thread-safe. Deadlines are monotonic and come from the device's frame (a replayed
    operation has less time left than a fresh one), so they are kept in a heap."""

    def __init__(self) -> None:
        self._by_corr: dict[bytes, Pending] = {}
        self._order: list[tuple[float, int, Pending]] = []
        self._seq = itertools.count()  # ties never compare two Pending records
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_corr)

    def add(self, entry: Pending) -> None:
        """Registered before the publication: the reply may beat ``send()`` back."""
        with self._lock:
            self._by_corr[entry.corr] = entry

    def armed(self, entry: Pending) -> bool:
        """Starts the entry's clock once it is published; True if it is now the earliest
        deadline (the worker may be sleeping until a later one, or with none at all)."""
        with self._lock:
            first = not self._order or entry.deadline < self._order[0][0]
            heapq.heappush(self._order, (entry.deadline, next(self._seq), entry))
        return first

    def discard(self, entry: Pending) -> None:
        with self._lock:
            self._by_corr.pop(entry.corr, None)

    def get(self, corr: object) -> Pending | None:
        return self._by_corr.get(corr) if isinstance(corr, bytes) else None

    def count_reply(self, entry: Pending) -> bool:
        """True if this reply may be relayed (still awaited, under the bound)."""
        with self._lock:
            if self._by_corr.get(entry.corr) is not entry or entry.replies >= REPLIES_MAX:
                return False
            entry.replies += 1
            return True

    def next_deadline(self) -> float | None:
        with self._lock:
            return self._order[0][0] if self._order else None

    def expire(self, now: float) -> list[Pending]:
        """Forgets every entry past its deadline; returns those that got no reply."""
        unanswered = []
        with self._lock:
            while self._order and self._order[0][0] <= now:
                entry = heapq.heappop(self._order)[2]
                if self._by_corr.get(entry.corr) is entry:
                    del self._by_corr[entry.corr]
                    if not entry.replies:
                        unanswered.append(entry)
        return unanswered

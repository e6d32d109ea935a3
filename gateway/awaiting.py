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
LATE_GRACE_S = 120.0  # a RESULT after its deadline is still relayed this long (PROTOCOL 9)
STRAGGLERS_MAX = 10_000  # operations counted outside the waiting list


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


class Stragglers:
    """Replies counted for operations no longer in the waiting list: one published before a
    restart, or one past its deadline (a late RESULT still settles its device's doubt).

    Each operation stays until the end of its grace period (its correlation data's deadline
    plus LATE_GRACE_S; a reply after that is refused anyway), so REPLIES_MAX holds for every
    operation; when full, a new one is refused rather than an older one forgotten. Thread-safe.
    """

    def __init__(self, cap: int = STRAGGLERS_MAX) -> None:
        self._counts: dict[bytes, int] = {}  # corr -> replies relayed
        self._ends: list[tuple[float, bytes]] = []  # heap of (end of grace, unix s; corr)
        self._cap = cap
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, corr: bytes, until: float, now: float) -> bool:
        """True if one more reply for ``corr`` may be relayed; ``until`` is when its grace ends."""
        with self._lock:
            while self._ends and self._ends[0][0] <= now:
                self._counts.pop(heapq.heappop(self._ends)[1], None)
            n = self._counts.get(corr)
            if n is None:
                if len(self._counts) >= self._cap:
                    return False
                heapq.heappush(self._ends, (until, corr))
                n = 0
            if n >= REPLIES_MAX:
                return False
            self._counts[corr] = n + 1
            return True

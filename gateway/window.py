"""Operations that wait in memory for a slot in the upstream window.

While connected, an operation that does not fit the in-flight window (at most the broker's
receive maximum) waits here for the next PUBACK instead of going through the rate-limited
replay path: the first gateway build ran at 200 ops/s because of that. Bounded; when full,
or when the connection drops, operations go to the store-and-forward queue instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ecoin.gateway.records import Op

WAITING_MAX = 10_000


class WindowWait:
    def __init__(self, size: int = WAITING_MAX) -> None:
        self.size = size
        self._ops: deque[Op] = deque()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._ops)

    def push(self, op: Op) -> bool:
        """False if full (the caller queues it on disk)."""
        with self._lock:
            if len(self._ops) >= self.size:
                return False
            self._ops.append(op)
            return True

    def drain(self, send: Callable[[Op], bool], has_room: Callable[[], bool]) -> None:
        """Sends, oldest first, while the window has room."""
        while has_room():
            with self._lock:
                if not self._ops:
                    return
                op = self._ops.popleft()
            if not send(op):
                with self._lock:
                    self._ops.appendleft(op)
                return

    def take_all(self) -> list[Op]:
        with self._lock:
            ops, self._ops = list(self._ops), deque()
        return ops

"""Failed logins, counted per user name: after ``failures`` within ``window_s`` the name
gets 429 until the oldest of them ages out.

Per name and not per address: behind the HTTPS proxy the docs recommend, every browser has
the proxy's address, so a limit per address would lock everyone out at once. Refused before
the scrypt check, so guessing costs the guesser time and not the dashboard's CPU. Bounded
memory: at most ``names`` names are remembered, the least recently failed forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

NAMES_MAX = 10_000


class LoginThrottle:
    def __init__(
        self,
        failures: int,
        window_s: float,
        names: int = NAMES_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.names = names
        self.clock = clock
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_s(self, name: str) -> float:
        """0 if ``name`` may try now, else the seconds until it may."""
        times = self._recent(name)
        if len(times) < self.failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - self.clock())

    def failed(self, name: str) -> None:
        times = self._recent(name)
        times.append(self.clock())
        self._failed[name] = times
        self._failed.move_to_end(name)
        while len(self._failed) > self.names:
            self._failed.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failed.pop(name, None)

    def _recent(self, name: str) -> deque[float]:
        times = self._failed.get(name, deque())
        while times and times[0] + self.window_s <= self.clock():
            times.popleft()
        return times

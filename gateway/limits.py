"""Token buckets: per-device rate limits on input, and the pace of a backlog replay."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Not thread-safe by itself."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there (0 if they are now)."""
        self._refill()
        return max(0.0, (n - self._tokens) / self.rate)


class DeviceLimiter:
    """One bucket per device id, thread-safe. Buckets of devices idle for long are forgotten
    (least recently used first) so a flood of made-up ids cannot grow memory."""

    def __init__(self, rate: float, burst: float, max_devices: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_devices = max_devices
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, device: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(device)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.burst)
                self._buckets[device] = bucket
                if len(self._buckets) > self.max_devices:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(device)
            return bucket.take()

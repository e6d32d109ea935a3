"""Repeat filters: which (device, op_id) the gateway has seen, and which top-ups are at the
bank right now.

An operation is forwarded at most once: a QoS 1 redelivery or a device's retry of the same
op_id is dropped (``Recent``). A top-up, by contrast, may be relayed again once its first
relay has ended, also after a FAILED, because the identical resend is how a device recovers
a lost answer (PROTOCOL 4.5); only a resend while the first is still at the bank is dropped
(``InFlight``), its answer is on the way.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


def key(device: str, op_id: bytes) -> bytes:
    return device.encode() + op_id


class Recent:
    """The last ``size`` (device, op_id) pairs, oldest forgotten first. Thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, device: str, op_id: bytes) -> bool:
        k = key(device, op_id)
        with self._lock:
            if k in self._seen:
                return False
            self._seen[k] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return True


class InFlight:
    """Keys being worked on; bounded by the callers (the relay's worker count). Thread-safe."""

    def __init__(self) -> None:
        self._keys: set[bytes] = set()
        self._lock = threading.Lock()

    def claim(self, k: bytes) -> bool:
        """False if ``k`` is in flight already."""
        with self._lock:
            if k in self._keys:
                return False
            self._keys.add(k)
            return True

    def release(self, k: bytes) -> None:
        with self._lock:
            self._keys.discard(k)

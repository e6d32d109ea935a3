"""Jittered exponential backoff for reconnects (so a fleet does not reconnect in step)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        """Half the exponential step, plus a random share of the other half."""
        step = min(self.cap, self.first * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return step / 2 + random.uniform(0, step / 2)

    def reset(self) -> None:
        self.attempt = 0

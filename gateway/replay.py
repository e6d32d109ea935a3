"""Replay of the store-and-forward backlog once upstream is back.

Only once the directory is complete again, and only for services with a live analyst: a
request nobody has subscribed to yet would be silently lost by the broker. Paced by a token
bucket (``queue.replay_rate`` per second, ``queue.replay_burst``), oldest first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ecoin.gateway.directory import Directory
from ecoin.gateway.limits import TokenBucket
from ecoin.gateway.queue import OpQueue
from ecoin.gateway.records import Op

log = logging.getLogger("ecoin.gateway.replay")


class Replay:
    def __init__(self, queue: OpQueue, directory: Directory, rate: float, burst: int) -> None:
        self.queue = queue
        self.directory = directory
        self._bucket = TokenBucket(rate, burst)
        self.blocked = False  # what waits is for services with no analyst: sleep until a kick

    def wait_time(self, has_room: bool) -> float | None:
        """Seconds until the next replay could go (None: nothing to replay now)."""
        if not (self.queue.depth and has_room and self.directory.synced_now) or self.blocked:
            return None
        return self._bucket.wait_time()

    def run(
        self, has_room: Callable[[], bool], send: Callable[[Op], bool], requeue: Callable[[Op], None]
    ) -> int:
        """Sends what the bucket allows now; returns how many went."""
        sent = 0
        while self.queue.depth and self.directory.synced_now and has_room():
            if self._bucket.wait_time() > 0:
                break
            batch = self.queue.take(1, self.directory.live())
            if not batch:
                self.blocked = True
                break
            self._bucket.take()
            q = batch[0]
            started = time.monotonic() - max(0.0, time.time() - q.at)
            op = Op(q.route, q.device, q.service, q.op_id, q.frame, started)
            if not send(op):
                requeue(op)  # lost the race for the window
                break
            sent += 1
        if sent and not self.queue.depth:
            log.info("queue_drained")
        return sent

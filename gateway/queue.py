"""Store-and-forward: operations wait here, in SQLite (WAL), while upstream is down.

Policy (docs/GATEWAY.md): the queue holds at most ``max_bytes`` of frames and keeps none
longer than ``max_age_s``. To make room, and when a frame grows too old, the OLDEST
operations are dropped first and their devices are told (ERROR DROPPED) by the caller.

Delivery is at most once: ``take`` removes rows in the same transaction that hands them to
the caller, before they are published. An operation is therefore never sent twice to an
analyst, even across a crash; one lost in that instant ends, for its device, in a TIMEOUT
(the coin is "in doubt" and can be claimed back, docs/BANK_API.md).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    device TEXT NOT NULL,
    route TEXT NOT NULL,
    service TEXT NOT NULL,
    op_id BLOB NOT NULL,
    frame BLOB NOT NULL,
    size INTEGER NOT NULL
)
"""


META = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
)
"""


class QueueError(Exception):
    """The queue's database could not be opened or written (disk full, bad path)."""


@dataclass(frozen=True)
class Queued:
    id: int
    at: float
    device: str
    route: str
    service: str
    op_id: bytes
    frame: bytes


_SELECT = "SELECT id, at, device, route, service, op_id, frame FROM ops "


class OpQueue:
    def __init__(
        self,
        path: str | Path,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(SCHEMA)
            self._db.execute(META)
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM ops").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"cannot open queue {path}: {exc}") from exc
        self.depth, self.bytes = int(row[0]), int(row[1])

    def put(
        self, device: str, route: str, service: str, op_id: bytes, frame: bytes, at: float | None = None
    ) -> list[Queued]:
        """Stores one operation that came in at ``at`` (wall clock; default now); returns the
        operations dropped to make room (oldest first). A frame larger than the whole cap, or
        one the disk refuses, is itself returned."""
        size = len(frame)
        now = self._clock() if at is None else at
        new = Queued(0, now, device, route, service, bytes(op_id), bytes(frame))
        if size > self.max_bytes:
            return [new]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                dropped = self._make_room(size)
                self._db.execute(
                    "INSERT INTO ops (at, device, route, service, op_id, frame, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (now, device, route, service, new.op_id, new.frame, size),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                return [new]
            self.depth += 1 - len(dropped)
            self.bytes += size - sum(len(q.frame) for q in dropped)
        return dropped

    def _make_room(self, size: int) -> list[Queued]:
        dropped: list[Queued] = []
        excess = self.bytes + size - self.max_bytes
        last = -1
        while excess > 0:
            rows = self._db.execute(_SELECT + "WHERE id > ? ORDER BY id LIMIT 64", (last,)).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for row in rows:
                if excess <= 0:
                    break
                q = Queued(*row)
                dropped.append(q)
                excess -= len(q.frame)
        self._db.executemany("DELETE FROM ops WHERE id = ?", [(q.id,) for q in dropped])
        return dropped

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _remove(self, where: str, args: tuple[object, ...]) -> list[Queued]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(_SELECT + where, args).fetchall()
                self._db.executemany("DELETE FROM ops WHERE id = ?", [(row[0],) for row in rows])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise QueueError(f"queue read failed: {exc}") from exc
            out = [Queued(*row) for row in rows]
            self.depth -= len(out)
            self.bytes -= sum(len(q.frame) for q in out)
            return out

    def take(self, n: int, services: frozenset[str] | None = None) -> list[Queued]:
        """Removes and returns the ``n`` oldest operations (the hand-off to upstream), only
        of the given services if ``services`` is set (the others keep waiting)."""
        if services is None:
            return self._remove("ORDER BY id LIMIT ?", (n,))
        if not services:
            return []
        marks = ",".join("?" * len(services))
        return self._remove(f"WHERE service IN ({marks}) ORDER BY id LIMIT ?", (*sorted(services), n))

    def expire(self) -> list[Queued]:
        """Removes and returns every operation older than the age cap."""
        if not self.depth:
            return []
        return self._remove("WHERE at < ? ORDER BY id", (self._clock() - self.max_age_s,))

    def next_expiry(self) -> float | None:
        """Seconds until the oldest operation passes the age cap (None if empty)."""
        if not self.depth:
            return None
        with self._lock:
            row = self._db.execute("SELECT MIN(at) FROM ops").fetchone()
        if row[0] is None:
            return None
        return max(0.0, float(row[0]) + self.max_age_s - self._clock())

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random value kept in this store across restarts (made on first use). The
        gateway's correlation key lives here: the file already holds what a restart needs."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (name, os.urandom(size))
                )
                row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            except sqlite3.Error as exc:
                raise QueueError(f"queue store: {exc}") from exc
        return bytes(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

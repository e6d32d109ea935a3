"""The embedded ledger: SQLite in WAL mode with a busy timeout and durable commits.

One connection per process, behind a lock: SQLite has one writer at a time anyway, and a
lock in the process queues our own threads fairly instead of letting them poll the file
lock (the "lock storm" of the field notes). Other processes (``ecoin-bank audit``,
``expire``) wait through ``busy_timeout``. Every write transaction starts with
``BEGIN IMMEDIATE`` so it takes the write lock up front and never fails half-way on an
upgrade.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ecoin.common.bank_errors import Unavailable

from .store import Conflict, Store, StoreError, Tx

# Primary result codes meaning "the database cannot be used right now".
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PROTOCOL,
}


def translate(exc: sqlite3.Error) -> Exception:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(str(exc))
    if code in _UNAVAILABLE:
        return Unavailable(f"database unavailable: {getattr(exc, 'sqlite_errorname', '')} {exc}".strip())
    return StoreError(f"database error: {exc}")


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=self.busy_timeout_ms / 1000,
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise translate(exc) from exc
            try:
                yield Tx(conn.cursor())
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._drop()  # a connection that cannot roll back is not reused
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc) from exc
                raise

    def checkpoint(self) -> None:
        """Folds the WAL into the main file (bench: measure the file alone)."""
        with self._lock:
            self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def close(self) -> None:
        with self._lock:
            self._drop()

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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ecoin.common.bank_errors import Unavailable

from .store import Conflict, Store, StoreError, Tx, seed

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    services TEXT NOT NULL DEFAULT '', balance INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, debit INTEGER NOT NULL,
    credit INTEGER NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0), ref TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS transfers_ref ON transfers (ref) WHERE ref IS NOT NULL;
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, owner INTEGER NOT NULL, key_enc BLOB NOT NULL,
    counter INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, request TEXT NOT NULL UNIQUE, owner INTEGER NOT NULL, device TEXT NOT NULL,
    kid BLOB NOT NULL, nonce BLOB NOT NULL, op_id BLOB, count INTEGER NOT NULL,
    created INTEGER NOT NULL, expires INTEGER NOT NULL, purged INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0, final_redeemed INTEGER NOT NULL DEFAULT 0,
    final_refunded INTEGER NOT NULL DEFAULT 0);
-- About 24 bytes per outstanding coin: a 16-byte key, a small batch number, a state that
-- costs no byte while it is 0 or 1, and no rowid.
CREATE TABLE IF NOT EXISTS coins (
    hash BLOB PRIMARY KEY, batch INTEGER NOT NULL, state INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spends (
    hash BLOB PRIMARY KEY, analyst INTEGER NOT NULL, op_id BLOB NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, event TEXT NOT NULL, body TEXT NOT NULL,
    hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL);
"""

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

    def init(self) -> None:
        with self._lock:
            conn = self._connection()
            try:
                conn.executescript(SCHEMA)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
        self.run(lambda tx: seed(tx, int(time.time())))

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

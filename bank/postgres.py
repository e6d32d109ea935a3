"""The shared ledger: PostgreSQL through a DSN (psycopg 3), for several bank instances.

Transactions run at READ COMMITTED: a conditional ``UPDATE ... WHERE state = 0`` re-checks
its condition on the newest row version after waiting for a concurrent writer, so exactly
one of two racing spends changes the row. Deadlocks and serialisation failures, which the
global lock order should prevent, are retried by ``Store.run`` all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from ecoin.common.bank_errors import Unavailable

from .store import Conflict, Retry, Store, StoreError, Tx, seed

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    services TEXT NOT NULL DEFAULT '', balance BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, kind TEXT NOT NULL, debit BIGINT NOT NULL,
    credit BIGINT NOT NULL, amount BIGINT NOT NULL CHECK (amount > 0), ref TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS transfers_ref ON transfers (ref) WHERE ref IS NOT NULL;
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, owner BIGINT NOT NULL, key_enc BYTEA NOT NULL,
    counter BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id BIGSERIAL PRIMARY KEY, request TEXT NOT NULL UNIQUE, owner BIGINT NOT NULL, device TEXT NOT NULL,
    kid BYTEA NOT NULL, nonce BYTEA NOT NULL, op_id BYTEA, count INTEGER NOT NULL,
    created BIGINT NOT NULL, expires BIGINT NOT NULL, purged INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0, final_redeemed INTEGER NOT NULL DEFAULT 0,
    final_refunded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS coins (hash BYTEA PRIMARY KEY, batch BIGINT NOT NULL, state SMALLINT NOT NULL);
CREATE TABLE IF NOT EXISTS spends (
    hash BYTEA PRIMARY KEY, analyst BIGINT NOT NULL, op_id BYTEA NOT NULL, at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, event TEXT NOT NULL, body TEXT NOT NULL, hash BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash BYTEA NOT NULL);
"""

_INIT_LOCK = 0x65636F696E  # advisory lock id: two instances starting at once create the schema once


class PgTx(Tx):
    dialect = "postgres"
    lock = " FOR UPDATE"

    used = False  # True once a statement went through: from then on a failure is not "stale"

    def q(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(sql.replace("?", "%s"), params)
        self.used = True
        return self.cur

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cur.executemany(sql.replace("?", "%s"), rows)

    def snapshot(self) -> None:
        self.q("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]


def translate(exc: psycopg.Error) -> Exception:
    if isinstance(exc, pgerrors.SerializationFailure | pgerrors.DeadlockDetected):
        return Retry(str(exc))
    if isinstance(exc, psycopg.IntegrityError):
        return Conflict(str(exc))
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return Unavailable(f"database unavailable: {exc}".strip())
    return StoreError(f"database error: {exc}")


class PostgresStore(Store):
    kind = "postgres"

    def __init__(self, dsn: str, pool_size: int = 8, connect_timeout: int = 5) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._slots = threading.BoundedSemaphore(pool_size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []

    def _get(self) -> tuple[psycopg.Connection[Any], bool]:
        """(connection, reused from the pool)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            conn = psycopg.connect(
                self.dsn, connect_timeout=self.connect_timeout, options="-c statement_timeout=30000"
            )
            return conn, False
        except psycopg.Error as exc:
            raise Unavailable(f"database unavailable: {exc}") from exc

    def _put(self, conn: psycopg.Connection[Any], healthy: bool) -> None:
        if healthy and not conn.closed:
            with self._lock:
                self._idle.append(conn)
            return
        try:
            conn.close()
        except psycopg.Error:
            pass

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        with self._slots:
            conn, reused = self._get()
            healthy = False
            tx = PgTx(conn.cursor())
            try:
                yield tx
                conn.commit()
                healthy = True
            except BaseException as exc:
                healthy = _rollback(conn)
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    self.close()  # the server went away: every idle connection is dead too
                    if reused and not tx.used:  # nothing was sent: safe to run it again
                        raise Retry(f"stale connection: {exc}") from exc
                if isinstance(exc, psycopg.Error):
                    raise translate(exc) from exc
                raise
            finally:
                tx.cur.close()
                self._put(conn, healthy)

    def init(self) -> None:
        def create(tx: Tx) -> None:
            tx.q("SELECT pg_advisory_xact_lock(?)", (_INIT_LOCK,))
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    tx.q(statement)
            seed(tx, int(time.time()))

        self.run(create)

    def size_bytes(self) -> int:
        return int(
            self.run(lambda tx: tx.q("SELECT pg_database_size(current_database())").fetchone()[0], False)
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._put(conn, False)


def _rollback(conn: psycopg.Connection[Any]) -> bool:
    """Rolls back; True when the connection is still fit for reuse."""
    try:
        conn.rollback()
        return not conn.closed
    except psycopg.Error:
        return False

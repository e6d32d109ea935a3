"""The shared ledger: PostgreSQL through a DSN (psycopg 3), for several bank instances.

Transactions run at READ COMMITTED: a conditional ``UPDATE ... WHERE state = 0`` re-checks
its condition on the newest row version after waiting for a concurrent writer, so exactly
one of two racing spends changes the row. Deadlocks and serialisation failures, which the
global lock order should prevent, are retried by ``Store.run`` all the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from ecoin.common.bank_errors import Unavailable

from .store import Conflict, Retry, Store, StoreError, Tx

_SCHEMA_LOCK = 0x65636F696E  # advisory lock id: two instances starting at once migrate once


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

    def schema_lock(self) -> None:
        self.q("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))

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

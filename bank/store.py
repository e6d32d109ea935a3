"""The ledger's storage: an interface (``Store``) and the SQL every backend shares (``Tx``).

``ecoin.bank.sqlite`` and ``ecoin.bank.postgres`` provide connections, the schema and the
translation of their drivers' errors; the statements below run unchanged on both (written
with ``?`` placeholders, which the PostgreSQL backend rewrites).

Rules kept here for every backend:
- A coin is stored as the first 16 bytes of its SHA-256, never the coin itself.
- Statements are built with f-strings only to insert a placeholder list (``any_of``) or a
  row-lock clause; every value travels as a parameter (hence the ``noqa: S608``).
- Coin states: 0 outstanding, 1 redeemed, 2 refunded, 3 expired (only inside a purge).
- Every state change is one conditional statement (``UPDATE ... WHERE state = 0``), and the
  caller acts on what that statement changed, never on a value it read before.
- Rows are locked in one global order (devices by id, for a top-up's counter or a policy's
  caps (``usage.spent``), then coins by hash, then accounts by id, then the audit head), so
  concurrent transactions on PostgreSQL cannot deadlock one another.
"""

from __future__ import annotations

import abc
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from ecoin.common.bank_errors import BankError

from . import migrations

T = TypeVar("T")

OUTSTANDING, REDEEMED, REFUNDED, EXPIRED = 0, 1, 2, 3
STATE_NAMES = {OUTSTANDING: "outstanding", REDEEMED: "redeemed", REFUNDED: "refunded", EXPIRED: "expired"}
GENESIS = bytes(32)  # the hash before the first audit entry
TREASURY, COINS = "@treasury", "@coins"  # system accounts: money's source, coins in circulation


class StoreError(BankError):
    """A storage failure the caller can do nothing about (a bug or a broken schema)."""


class Conflict(StoreError):
    """A unique key was already taken (the statement changed nothing)."""


class Retry(StoreError):
    """A transient conflict between transactions (deadlock, serialisation): run it again."""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    kind: str
    balance: int
    services: tuple[str, ...]


@dataclass(frozen=True)
class Device:
    id: str
    owner: int
    key_enc: bytes
    counter: int


@dataclass(frozen=True)
class Batch:
    id: int
    request: str
    owner: int
    device: str
    kid: bytes
    nonce: bytes
    op_id: bytes | None
    count: int
    created: int
    expires: int


@dataclass(frozen=True)
class CoinState:
    state: int
    batch: int
    expires: int
    owner: int
    device: str


@dataclass(frozen=True)
class Spend:
    analyst: str
    op_id: bytes
    at: int
    digest: bytes | None  # of the operation paid for; None for spends of the v1 ledger


def audit_hash(prev: bytes, seq: int, at: int, event: str, body: str) -> bytes:
    """The chain: each entry's hash covers the previous hash and every field of the entry."""
    h = hashlib.sha256(prev)
    h.update(seq.to_bytes(8, "big") + at.to_bytes(8, "big"))
    h.update(event.encode() + b"\x00" + body.encode())
    return h.digest()


class Tx:
    """One database transaction. Backends pass a cursor-like ``execute`` and say how they
    spell "any of these values" and row locks."""

    dialect = "sqlite"

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    # Backend hooks.

    def q(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(sql, params)
        return self.cur

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cur.executemany(sql, rows)

    def any_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    lock = ""  # appended to a SELECT that must lock its row (PostgreSQL: FOR UPDATE)

    def snapshot(self) -> None:
        """Makes every later read of this transaction see one snapshot (SQLite always does)."""

    def schema_lock(self) -> None:
        """Serialises schema changes between processes (SQLite: BEGIN IMMEDIATE already does)."""

    # Accounts and the double-entry journal.

    def account_add(self, name: str, kind: str, services: Sequence[str], at: int) -> int:
        row = self.q(
            "INSERT INTO accounts (name, kind, services, balance, created) VALUES (?, ?, ?, 0, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, kind, ",".join(services), at),
        ).fetchone()
        if row is None:
            raise Conflict(f"account {name} exists")
        return int(row[0])

    def account(self, name: str) -> Account | None:
        row = self.q(
            "SELECT id, name, kind, balance, services FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return _account(row) if row else None

    def account_by_id(self, account_id: int) -> Account:
        row = self.q(
            "SELECT id, name, kind, balance, services FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"account #{account_id} is missing")
        return _account(row)

    def accounts(self) -> list[Account]:
        rows = self.q("SELECT id, name, kind, balance, services FROM accounts ORDER BY name").fetchall()
        return [_account(r) for r in rows]

    def transfer(
        self, debit: int, credit: int, amount: int, kind: str, at: int, ref: str | None = None
    ) -> bool:
        """Moves ``amount`` from ``debit`` to ``credit`` and journals it. Returns False (and
        changes nothing) when ``debit`` would go below zero; system accounts may.
        Accounts are updated in id order (the global lock order)."""
        if amount <= 0:
            raise StoreError("transfer amount must be positive")
        credited = False
        for account_id in sorted((debit, credit)):
            if account_id == debit:
                cur = self.q(
                    "UPDATE accounts SET balance = balance - ? WHERE id = ?"
                    " AND (balance >= ? OR kind = 'system')",
                    (amount, debit, amount),
                )
                if cur.rowcount != 1:
                    if credited:  # undo, so that "False" really means "nothing changed"
                        self.q("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, credit))
                    return False
            else:
                self.q("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, credit))
                credited = True
        self.q(
            "INSERT INTO transfers (at, kind, debit, credit, amount, ref) VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, debit, credit, amount, ref),
        )
        return True

    def transfer_ref(self, ref: str) -> tuple[int, int, int] | None:
        """(debit, credit, amount) of the transfer made under this idempotency reference."""
        row = self.q("SELECT debit, credit, amount FROM transfers WHERE ref = ?", (ref,)).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else None

    def journal_kinds(self) -> dict[str, int]:
        """Total moved per kind of transfer (fund, withdraw, redeem, refund, expire)."""
        return {str(k): int(v) for k, v in self.q("SELECT kind, SUM(amount) FROM transfers GROUP BY kind")}

    def journal_sums(self) -> dict[int, int]:
        sums: dict[int, int] = {}
        for account_id, total in self.q("SELECT credit, SUM(amount) FROM transfers GROUP BY credit"):
            sums[int(account_id)] = sums.get(int(account_id), 0) + int(total)
        for account_id, total in self.q("SELECT debit, SUM(amount) FROM transfers GROUP BY debit"):
            sums[int(account_id)] = sums.get(int(account_id), 0) - int(total)
        return sums

    # Devices.

    def device_add(self, device_id: str, owner: int, key_enc: bytes, at: int) -> None:
        cur = self.q(
            "INSERT INTO devices (id, owner, key_enc, counter, created) VALUES (?, ?, ?, 0, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (device_id, owner, key_enc, at),
        )
        if cur.rowcount != 1:
            raise Conflict(f"device {device_id} exists")

    def device(self, device_id: str) -> Device | None:
        """A device in service (a decommissioned one is unknown: its key is erased)."""
        row = self.q(
            "SELECT id, owner, key_enc, counter FROM devices WHERE id = ? AND retired IS NULL", (device_id,)
        ).fetchone()
        return Device(row[0], int(row[1]), bytes(row[2]), int(row[3])) if row else None

    def devices(self, owner: int | None = None) -> list[Device]:
        sql, params = "SELECT id, owner, key_enc, counter FROM devices WHERE retired IS NULL", []
        if owner is not None:
            sql, params = sql + " AND owner = ?", [owner]
        rows = self.q(sql + " ORDER BY id", params).fetchall()
        return [Device(r[0], int(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def device_advance(self, device_id: str, counter: int) -> bool:
        """Accepts ``counter`` only if it is above every counter accepted before."""
        cur = self.q(
            "UPDATE devices SET counter = ? WHERE id = ? AND counter < ?", (counter, device_id, counter)
        )
        return bool(cur.rowcount == 1)

    # Batches and coins.

    def batch_add(self, b: Batch) -> int | None:
        """Inserts a batch; None when its request key is taken (an idempotent repeat)."""
        row = self.q(
            "INSERT INTO batches (request, owner, device, kid, nonce, op_id, count, created, expires)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request) DO NOTHING RETURNING id",
            (b.request, b.owner, b.device, b.kid, b.nonce, b.op_id, b.count, b.created, b.expires),
        ).fetchone()
        return int(row[0]) if row else None

    def batch(self, request: str) -> Batch | None:
        row = self.q(
            "SELECT id, request, owner, device, kid, nonce, op_id, count, created, expires"
            " FROM batches WHERE request = ?",
            (request,),
        ).fetchone()
        if row is None:
            return None
        op_id = bytes(row[6]) if row[6] is not None else None
        return Batch(
            int(row[0]), row[1], int(row[2]), row[3], bytes(row[4]), bytes(row[5]), op_id, *map(int, row[7:])
        )

    def coins_add(self, batch: int, hashes: Sequence[bytes]) -> None:
        """Sorted inserts fill the b-tree's pages (fewer bytes per coin)."""
        self.many(
            "INSERT INTO coins (hash, batch, state) VALUES (?, ?, 0)", ((h, batch) for h in sorted(hashes))
        )

    def spend(self, hashes: Sequence[bytes], now: int) -> set[bytes]:
        """THE spend: one conditional statement. Returns the hashes it moved from outstanding
        to redeemed; every other coin was unknown, spent, refunded or expired already."""
        cond, params = self.any_of("hash", hashes)
        rows = self.q(
            f"UPDATE coins SET state = 1 WHERE {cond} AND state = 0"  # noqa: S608
            " AND batch IN (SELECT id FROM batches WHERE expires > ?) RETURNING hash",
            [*params, now],
        ).fetchall()
        return {bytes(r[0]) for r in rows}

    def unspend(self, hashes: Sequence[bytes]) -> None:
        """Undoes ``spend`` for coins of this transaction no header could take whole."""
        cond, params = self.any_of("hash", hashes)
        self.q(f"UPDATE coins SET state = 0 WHERE {cond} AND state = 1", params)  # noqa: S608

    def spends_add(self, rows: Sequence[tuple[bytes, int, bytes, int, bytes]]) -> None:
        """(hash, analyst id, op_id, at, digest) for every coin ``spend`` just moved."""
        self.many("INSERT INTO spends (hash, analyst, op_id, at, digest) VALUES (?, ?, ?, ?, ?)", rows)

    def refund(self, hashes: Sequence[bytes], owner: int, device: str) -> set[bytes]:
        """One conditional statement: outstanding coins of this owner's device become refunded."""
        cond, params = self.any_of("hash", hashes)
        rows = self.q(
            f"UPDATE coins SET state = 2 WHERE {cond} AND state = 0"  # noqa: S608
            " AND batch IN (SELECT id FROM batches WHERE owner = ? AND device = ?) RETURNING hash",
            [*params, owner, device],
        ).fetchall()
        return {bytes(r[0]) for r in rows}

    def coin_states(self, hashes: Sequence[bytes]) -> dict[bytes, CoinState]:
        cond, params = self.any_of("c.hash", hashes)
        rows = self.q(
            "SELECT c.hash, c.state, c.batch, b.expires, b.owner, b.device FROM coins c"  # noqa: S608
            f" JOIN batches b ON b.id = c.batch WHERE {cond}",
            params,
        ).fetchall()
        return {bytes(r[0]): CoinState(int(r[1]), int(r[2]), int(r[3]), int(r[4]), r[5]) for r in rows}

    def outstanding_owners(self, hashes: Sequence[bytes]) -> dict[bytes, tuple[int, str]]:
        """{hash: (owner, device)} of the outstanding ones among ``hashes``: what a
        redemption's policy check and usage tally need, as plain tuples (one per coin of
        every batch: no ``CoinState`` built for each)."""
        cond, params = self.any_of("c.hash", hashes)
        rows = self.q(
            "SELECT c.hash, b.owner, b.device FROM coins c"  # noqa: S608
            f" JOIN batches b ON b.id = c.batch WHERE {cond} AND c.state = 0",
            params,
        ).fetchall()
        return {bytes(h): (int(o), d) for h, o, d in rows}

    def spends(self, hashes: Sequence[bytes]) -> dict[bytes, Spend]:
        cond, params = self.any_of("s.hash", hashes)
        rows = self.q(
            "SELECT s.hash, a.name, s.op_id, s.at, s.digest FROM spends s"  # noqa: S608
            f" JOIN accounts a ON a.id = s.analyst WHERE {cond}",
            params,
        ).fetchall()
        return {
            bytes(r[0]): Spend(r[1], bytes(r[2]), int(r[3]), bytes(r[4]) if r[4] is not None else None)
            for r in rows
        }

    def expire(self, now: int) -> list[tuple[int, int, int]]:
        """Expires every outstanding coin of every batch past its date (one conditional
        statement), then purges those batches' coins and spends and keeps their final counts.
        Returns (batch, owner, coins expired) for the owners' refunds."""
        due = self.q(
            "SELECT id, owner FROM batches WHERE expires <= ? AND purged = 0 ORDER BY id", (now,)
        ).fetchall()
        if not due:
            return []
        ids = [int(r[0]) for r in due]
        cond, params = self.any_of("batch", ids)
        expired: dict[int, int] = dict.fromkeys(ids, 0)
        for (batch,) in self.q(
            f"UPDATE coins SET state = 3 WHERE {cond} AND state = 0 RETURNING batch",  # noqa: S608
            params,
        ).fetchall():
            expired[int(batch)] += 1
        final: dict[tuple[int, int], int] = {}
        for batch, state, n in self.q(
            f"SELECT batch, state, COUNT(*) FROM coins WHERE {cond} GROUP BY batch, state",  # noqa: S608
            params,
        ):
            final[(int(batch), int(state))] = int(n)
        for batch in ids:
            self.q(
                "UPDATE batches SET purged = 1, expired = ?, final_redeemed = ?, final_refunded = ?"
                " WHERE id = ?",
                (expired[batch], final.get((batch, REDEEMED), 0), final.get((batch, REFUNDED), 0), batch),
            )
        self.q(f"DELETE FROM spends WHERE hash IN (SELECT hash FROM coins WHERE {cond})", params)  # noqa: S608
        self.q(f"DELETE FROM coins WHERE {cond}", params)  # noqa: S608
        return [(int(b), int(owner), expired[int(b)]) for b, owner in due]

    # The hash-chained audit log.

    def audit(self, event: str, body: dict[str, Any], at: int) -> int:
        """Appends one entry; the head row is locked last (global lock order)."""
        seq, prev = self.q(f"SELECT seq, hash FROM audit_head WHERE id = 1{self.lock}").fetchone()  # noqa: S608
        seq = int(seq) + 1
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        digest = audit_hash(bytes(prev), seq, at, event, text)
        self.q(
            "INSERT INTO audit (seq, at, event, body, hash) VALUES (?, ?, ?, ?, ?)",
            (seq, at, event, text, digest),
        )
        self.q("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
        return seq

    def audit_entries(self, after: int = 0, limit: int = 10000) -> list[tuple[int, int, str, str, bytes]]:
        rows = self.q(
            "SELECT seq, at, event, body, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [(int(r[0]), int(r[1]), r[2], r[3], bytes(r[4])) for r in rows]

    def audit_head(self) -> tuple[int, bytes]:
        seq, digest = self.q("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return int(seq), bytes(digest)

    # Reconciliation figures (audit).

    def batch_counts(self) -> list[tuple[int, int, int, int, int, int]]:
        """(batch, minted, expired, final_redeemed, final_refunded, purged) per batch."""
        rows = self.q(
            "SELECT id, count, expired, final_redeemed, final_refunded, purged FROM batches ORDER BY id"
        ).fetchall()
        return [(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]

    def coin_counts(self) -> dict[tuple[int, int], int]:
        """{(batch, state): coins} over the coins table."""
        rows = self.q("SELECT batch, state, COUNT(*) FROM coins GROUP BY batch, state").fetchall()
        return {(int(b), int(s)): int(n) for b, s, n in rows}

    def spend_mismatches(self) -> tuple[int, int]:
        """(spends whose coin is not redeemed, redeemed coins without a spend)."""
        orphan = self.q(
            "SELECT COUNT(*) FROM spends s LEFT JOIN coins c ON c.hash = s.hash"
            " WHERE c.hash IS NULL OR c.state <> 1"
        ).fetchone()[0]
        missing = self.q(
            "SELECT COUNT(*) FROM coins c LEFT JOIN spends s ON s.hash = c.hash"
            " WHERE c.state = 1 AND s.hash IS NULL"
        ).fetchone()[0]
        return int(orphan), int(missing)


def seed(tx: Tx, at: int) -> None:
    """The rows every ledger starts with: the audit chain's head and the system accounts."""
    tx.q("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?) ON CONFLICT (id) DO NOTHING", (GENESIS,))
    for name in (TREASURY, COINS):
        if tx.account(name) is None:
            tx.account_add(name, "system", (), at)
            tx.audit("account", {"id": name, "kind": "system"}, at)


def _account(row: Sequence[Any]) -> Account:
    services = tuple(s for s in str(row[4]).split(",") if s)
    return Account(int(row[0]), row[1], row[2], int(row[3]), services)


class Store(abc.ABC):
    """A ledger database. ``run(fn)`` runs ``fn(tx)`` in one transaction, commits it, and
    runs it again on a transient conflict; ``fn`` must have no effect outside ``tx``."""

    kind = "store"

    def init(self) -> list[str]:
        """Creates the schema, or upgrades it to the latest version, and the system accounts
        (``ecoin-bank init`` and ``migrate``; idempotent). Returns the migrations applied."""

        def upgrade(tx: Tx) -> list[str]:
            tx.schema_lock()
            now = int(time.time())
            done = migrations.migrate(tx, now)
            seed(tx, now)
            return done

        return self.run(upgrade)

    def ready(self) -> None:
        """Before serving: an empty database gets the latest schema; a ledger at another
        version is refused (``SchemaMismatch`` names the command that upgrades it)."""

        def check(tx: Tx) -> None:
            tx.schema_lock()
            now = int(time.time())
            if migrations.check(tx) == 0:
                migrations.migrate(tx, now)
            seed(tx, now)

        self.run(check)

    @abc.abstractmethod
    def transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        """A context manager yielding a ``Tx``: commit on success, rollback on error."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """Bytes the database occupies (for bench and metrics)."""

    def run(self, fn: Callable[[Tx], T], write: bool = True, attempts: int = 5) -> T:
        for attempt in range(attempts):
            try:
                with self.transaction(write) as tx:
                    return fn(tx)
            except Retry:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

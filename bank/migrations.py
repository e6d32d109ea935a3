"""The ledger's one schema, as numbered migrations, and the runner that applies them.

Each migration is a list of statements written once for both backends, with the few type
names that differ as placeholders (``{pk}``, ``{big}``, ``{blob}`` ...). The table
``schema_version`` records every migration applied (version, name, when). A ledger made
before there were versions (the v1 ledger: its tables, no ``schema_version``) is version 1.

    ecoin-bank init      creates a new ledger at the latest version (or upgrades it)
    ecoin-bank migrate   upgrades an existing ledger; ``serve`` refuses one that is older

Why a runner of our own rather than a migration tool: Alembic works through SQLAlchemy, a
second database layer beside the store's own SQL; yoyo-migrations keeps its own connections
and lock tables and reads migrations from files it imports. What the bank needs is smaller
than either: apply a numbered list of statements in the store's own transaction (so a
failed upgrade leaves nothing half done: DDL is transactional on SQLite and PostgreSQL),
under the store's own lock, and record it. That is the fifty lines below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ecoin.common.bank_errors import BankError


class Tx(Protocol):
    """What the runner needs of a ``store.Tx`` (the store runs the migrations: this module
    does not import it)."""

    dialect: str

    def q(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


COMMAND = "ecoin-bank -c <this bank's bank.toml> migrate"


class SchemaMismatch(BankError):
    """The ledger's schema is not the one this bank speaks; nothing was changed."""

    code = "schema_mismatch"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_TYPES = {
    "sqlite": {
        "pk": "INTEGER PRIMARY KEY",
        "big": "INTEGER",
        "small": "INTEGER",
        "blob": "BLOB",
        "norowid": " WITHOUT ROWID",
    },
    "postgres": {
        "pk": "BIGSERIAL PRIMARY KEY",
        "big": "BIGINT",
        "small": "SMALLINT",
        "blob": "BYTEA",
        "norowid": "",
    },
}

MIGRATIONS = (
    Migration(
        1,
        "the v1 ledger: accounts, journal, devices, batches, coins, spends, audit chain",
        (
            "CREATE TABLE IF NOT EXISTS accounts (id {pk}, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
            " services TEXT NOT NULL DEFAULT '', balance {big} NOT NULL DEFAULT 0, created {big} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS transfers (id {pk}, at {big} NOT NULL, kind TEXT NOT NULL,"
            " debit {big} NOT NULL, credit {big} NOT NULL, amount {big} NOT NULL CHECK (amount > 0),"
            " ref TEXT)",
            "CREATE UNIQUE INDEX IF NOT EXISTS transfers_ref ON transfers (ref) WHERE ref IS NOT NULL",
            "CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, owner {big} NOT NULL,"
            " key_enc {blob} NOT NULL, counter {big} NOT NULL DEFAULT 0, created {big} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS batches (id {pk}, request TEXT NOT NULL UNIQUE, owner {big} NOT NULL,"
            " device TEXT NOT NULL, kid {blob} NOT NULL, nonce {blob} NOT NULL, op_id {blob},"
            " count INTEGER NOT NULL, created {big} NOT NULL, expires {big} NOT NULL,"
            " purged INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,"
            " final_redeemed INTEGER NOT NULL DEFAULT 0, final_refunded INTEGER NOT NULL DEFAULT 0)",
            # About 24 bytes per outstanding coin on SQLite: a 16-byte key, a small batch
            # number, a state that costs no byte while it is 0 or 1, and no rowid.
            "CREATE TABLE IF NOT EXISTS coins (hash {blob} PRIMARY KEY, batch {big} NOT NULL,"
            " state {small} NOT NULL){norowid}",
            "CREATE TABLE IF NOT EXISTS spends (hash {blob} PRIMARY KEY, analyst {big} NOT NULL,"
            " op_id {blob} NOT NULL, at {big} NOT NULL){norowid}",
            "CREATE TABLE IF NOT EXISTS audit (seq {big} PRIMARY KEY, at {big} NOT NULL, event TEXT NOT NULL,"
            " body TEXT NOT NULL, hash {blob} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " seq {big} NOT NULL, hash {blob} NOT NULL)",
        ),
    ),
    Migration(
        2,
        "protocol v2: a spend keeps the digest of the operation it paid for",
        # NULL for spends made before: a repeat of those gets "already spent".
        ("ALTER TABLE spends ADD COLUMN digest {blob}",),
    ),
    Migration(
        3,
        "owner policies, and the usage tally behind caps and statements",
        (
            "CREATE TABLE IF NOT EXISTS policies (owner {big} NOT NULL, device TEXT NOT NULL,"
            " body TEXT NOT NULL, updated {big} NOT NULL, PRIMARY KEY (owner, device))",
            "CREATE TABLE IF NOT EXISTS usage (device TEXT NOT NULL, day {big} NOT NULL,"
            " analyst {big} NOT NULL, service TEXT NOT NULL, owner {big} NOT NULL, coins {big} NOT NULL,"
            " PRIMARY KEY (device, day, analyst, service))",
            "CREATE INDEX IF NOT EXISTS usage_owner ON usage (owner, day)",
            "CREATE INDEX IF NOT EXISTS usage_analyst ON usage (analyst, day)",
            # What was spent before: live spends under service "" (not recorded then), and
            # the redeemed coins of purged batches under analyst 0 (their spends are gone),
            # so that the tally sums to every coin ever redeemed.
            "INSERT INTO usage (device, day, analyst, service, owner, coins)"
            " SELECT b.device, s.at / 86400, s.analyst, '', b.owner, COUNT(*) FROM spends s"
            " JOIN coins c ON c.hash = s.hash JOIN batches b ON b.id = c.batch"
            " GROUP BY b.device, s.at / 86400, s.analyst, b.owner",
            "INSERT INTO usage (device, day, analyst, service, owner, coins)"
            " SELECT device, created / 86400, 0, '', owner, SUM(final_redeemed) FROM batches"
            " WHERE purged = 1 AND final_redeemed > 0 GROUP BY device, created / 86400, owner",
        ),
    ),
    Migration(
        4,
        "claims by QR code: one-time claim secrets (their hash only), decommissioned devices",
        (
            # Claims offered and used (kept: a used secret stays refused); at most one open
            # per device. The secret itself is never stored, only its hash (bank/claims.py).
            "CREATE TABLE IF NOT EXISTS device_claims (secret_hash {blob} PRIMARY KEY, device TEXT NOT NULL,"
            " armed_by {big} NOT NULL, armed {big} NOT NULL, claimed_by {big}, claimed {big})",
            "CREATE INDEX IF NOT EXISTS device_claims_device ON device_claims (device)",
            # When a device was decommissioned (NULL: in service); its key is then erased.
            "ALTER TABLE devices ADD COLUMN retired {big}",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
    " applied {big} NOT NULL)"
)
_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgres": "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
}


def _sql(tx: Tx, template: str) -> str:
    return template.format(**_TYPES[tx.dialect])


def version(tx: Tx) -> int:
    """The ledger's schema version: 0 for an empty database, 1 for a ledger without versions."""
    tables = {str(r[0]) for r in tx.q(_TABLES[tx.dialect]).fetchall()}
    if "schema_version" in tables:
        return int(tx.q("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
    return 1 if "accounts" in tables else 0


def check(tx: Tx) -> int:
    """Refuses a ledger this bank cannot serve, naming the command that fixes it."""
    found = version(tx)
    if found > LATEST:
        raise SchemaMismatch(
            f"the ledger's schema is version {found}, newer than this bank's {LATEST}: upgrade the bank"
        )
    if 0 < found < LATEST:
        raise SchemaMismatch(
            f"the ledger's schema is version {found}; this bank needs version {LATEST}:"
            f" back up the database, then run `{COMMAND}`"
        )
    return found


def migrate(tx: Tx, now: int) -> list[str]:
    """Applies every migration above the ledger's version, in this one transaction.
    Returns one line per migration applied (nothing for an up-to-date ledger)."""
    found = version(tx)
    if found > LATEST:
        check(tx)
    tx.q(_sql(tx, _VERSION_TABLE))
    done = []
    if found == 1 and not tx.q("SELECT 1 FROM schema_version").fetchone():
        first = MIGRATIONS[0]  # a ledger made before versions: its tables are migration 1's
        tx.q("INSERT INTO schema_version VALUES (?, ?, ?)", (1, f"{first.name} (found)", now))
    for m in MIGRATIONS:
        if m.version <= found:
            continue
        for statement in m.statements:
            tx.q(_sql(tx, statement))
        tx.q("INSERT INTO schema_version VALUES (?, ?, ?)", (m.version, m.name, now))
        done.append(f"migration {m.version}: {m.name}")
    return done

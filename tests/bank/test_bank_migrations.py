"""The ledger's schema versions, on SQLite and PostgreSQL: a new ledger is at the latest
version, a ledger made by the v1 bank (no version table) is migrated and still reconciles,
and a bank refuses to serve a ledger of another version, naming the command that fixes it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from ecoin.bank import migrations
from ecoin.bank.audit import verify
from ecoin.bank.keys import Item, Opener
from ecoin.bank.ledger import Ledger
from ecoin.bank.postgres import PostgresStore
from ecoin.bank.sqlite import SqliteStore
from ecoin.bank.store import Store, Tx
from ecoin.bank.vault import Vault
from ecoin.common import keyfiles
from ecoin.testing.bank import BankProcess, operation_item

DATA = Path(__file__).resolve().parent / "data"
V1 = json.loads((DATA / "v1_ledger.json").read_text())
TABLES = ("accounts", "transfers", "devices", "batches", "coins", "spends", "audit", "audit_head")


def _v1_rows() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript((DATA / "v1_ledger.sql").read_text())
    return db


def v1_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """The v1 ledger of data/: on SQLite exactly as the v1 bank wrote it; on PostgreSQL the
    same rows in the tables the v1 bank created (migration 1, no version table)."""
    if kind == "sqlite":
        path = tmp_path / "v1.sqlite3"
        db = sqlite3.connect(path)
        db.executescript((DATA / "v1_ledger.sql").read_text())
        db.close()
        return SqliteStore(path)
    store = PostgresStore(request.getfixturevalue("pg_dsn"))
    rows = _v1_rows()

    def load(tx: Tx) -> None:
        for statement in migrations.MIGRATIONS[0].statements:
            tx.q(statement.format(**migrations._TYPES["postgres"]))
        for table in TABLES:
            cur = rows.execute(f"SELECT * FROM {table}")  # noqa: S608 - our own table names
            marks = ", ".join("?" * len(cur.description))
            tx.many(f"INSERT INTO {table} VALUES ({marks})", cur.fetchall())  # noqa: S608
        for table in ("accounts", "transfers", "batches"):  # serials continue after the rows
            tx.q(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")  # noqa: S608

    store.run(load)
    return store


def ledger_on(store: Store, pki: Path, tmp_path: Path) -> Ledger:
    key = tmp_path / "master.key"
    key.write_bytes(bytes.fromhex(V1["master_key"]))
    os.chmod(key, 0o600)
    return Ledger(store, Vault.load(key), Opener(pki, 0), clock=lambda: 1_800_000_100.0)


def schema_rows(store: Store) -> list[tuple[int, str]]:
    rows = store.run(lambda tx: tx.q("SELECT version, name FROM schema_version ORDER BY version").fetchall())
    return [(int(v), str(n)) for v, n in rows]


def test_a_new_ledger_is_at_the_latest_version(store: Store):
    assert [v for v, _ in schema_rows(store)] == [m.version for m in migrations.MIGRATIONS]
    assert store.run(migrations.version) == migrations.LATEST
    assert store.init() == []  # nothing left to apply
    store.ready()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_v1_ledger_is_refused_then_migrated_and_reconciles(kind, tmp_path, pki, request):
    store = v1_store(kind, tmp_path, request)
    assert store.run(migrations.version) == 1
    latest = migrations.LATEST
    with pytest.raises(migrations.SchemaMismatch, match=rf"needs version {latest}.*ecoin-bank.*migrate"):
        store.ready()
    assert store.run(migrations.version) == 1  # refusing changed nothing
    assert store.init() == [f"migration {m.version}: {m.name}" for m in migrations.MIGRATIONS[1:]]
    assert schema_rows(store)[0] == (1, f"{migrations.MIGRATIONS[0].name} (found)")
    store.ready()
    assert verify(store).problems == []

    # The migrated ledger works under protocol v2. A coin the v1 bank spent stays spent
    # (its spend has no digest, so no v2 operation can claim to be its retry).
    ledger = ledger_on(store, pki, tmp_path)
    coins = [bytes.fromhex(c) for c in V1["coins"]]
    kid, public = keyfiles.load_coin_public(pki)
    spent_again = Item(*operation_item(public, kid, coins[0], "average", bytes.fromhex(V1["spent_op_id"])))
    outstanding = Item(*operation_item(public, kid, coins[3], "average"))
    results = ledger.redeem("alice", [spent_again, outstanding])
    assert [r.get("code") for r in results] == ["already_spent", None]
    assert ledger.redeem("alice", [outstanding])[0]["status"] == "ok"  # a v2 retry
    claims = ledger.claim("olive", "dev1", coins)
    states = [c["state"] for c in claims]
    assert states == ["redeemed", "redeemed", "already_refunded", "redeemed", "refunded", "refunded"]
    assert ledger.balance("alice").balance == 3
    assert verify(store).problems == []
    store.close()


@pytest.mark.slow
def test_the_bank_refuses_to_serve_a_v1_ledger_until_it_is_migrated(pki, tmp_path):
    bank = BankProcess(tmp_path / "bank", pki)
    bank.cli("init")
    db = Path(bank.db)
    db.unlink()
    v1 = sqlite3.connect(db)
    v1.executescript((DATA / "v1_ledger.sql").read_text())
    v1.close()
    serve = bank.cli("serve", check=False)
    assert serve.returncode == 1, serve.stderr
    assert "schema is version 1" in serve.stderr and "ecoin-bank -c" in serve.stderr
    assert "migrate" in serve.stderr
    assert "Traceback" not in serve.stderr
    done = bank.cli("migrate").stdout
    assert "applied migration 2" in done and f"schema version {migrations.LATEST}" in done
    assert "applied" not in bank.cli("migrate").stdout  # idempotent
    assert "audit passed" in bank.cli("audit").stdout
    with bank:
        assert bank.admin.healthz()

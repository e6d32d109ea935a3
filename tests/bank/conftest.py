"""Fixtures of the bank's tests: a PostgreSQL server for the session, a fresh database per
test, and in-process ledgers on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from ecoin.bank.keys import Item, Opener
from ecoin.bank.ledger import Ledger
from ecoin.bank.postgres import PostgresStore
from ecoin.bank.sqlite import SqliteStore
from ecoin.bank.store import Store
from ecoin.bank.vault import Vault, create_master_key
from ecoin.common import keyfiles
from ecoin.testing.bank import operation_item
from ecoin.testing.servers import postgres

from .helpers import DEVICE_KEY, OTHER_KEY


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, Path]]:
    """(DSN of the maintenance database, cluster directory) of a private PostgreSQL. Its
    directory is outside pytest's (0700, root-only) tree: as root the server runs as the
    'postgres' user, which must reach it."""
    workdir = Path(tempfile.mkdtemp(prefix="ecoin-bank-pg-"))
    try:
        with postgres(workdir) as dsn:
            yield dsn, workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: tuple[str, Path]) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    base, _ = pg_server
    name = f"bank_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "bank.sqlite3")
    else:
        s = PostgresStore(request.getfixturevalue("pg_dsn"))
    s.init()
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_ledger(store: Store, pki_dir: Path, workdir: Path, clock: Clock) -> Ledger:
    key = workdir / "master.key"
    create_master_key(key)
    return Ledger(store, Vault.load(key), Opener(pki_dir, 0), expiry_days=730, clock=clock)


@pytest.fixture
def ledger(store: Store, pki: Path, tmp_path: Path, clock: Clock) -> Ledger:
    """olive (10,000 units, device dev1) and oscar (1,000, dev2) own; alice offers average and
    stats, bob average."""
    led = make_ledger(store, pki, tmp_path, clock)
    led.create_account("olive", "owner")
    led.create_account("oscar", "owner")
    led.create_account("alice", "analyst", ["average", "stats"])
    led.create_account("bob", "analyst", ["average"])
    led.fund("olive", 10_000)
    led.fund("oscar", 1_000)
    led.register_device("olive", "dev1", DEVICE_KEY)
    led.register_device("oscar", "dev2", OTHER_KEY)
    return led


@pytest.fixture
def make_item(pki: Path) -> Callable[..., Item]:
    """make_item(coin, service="average", op_id=None, readings=b"{}"): the redemption item of
    an operation as a device would seal it."""
    kid, public = keyfiles.load_coin_public(pki)

    def make(
        coin: bytes,
        service: str = "average",
        op_id: bytes | None = None,
        readings: bytes = b"{}",
    ) -> Item:
        return Item(*operation_item(public, kid, coin, service, op_id, readings))

    return make

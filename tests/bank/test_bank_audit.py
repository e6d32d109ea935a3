"""`ecoin-bank audit` passes on an honest ledger and names exactly what is wrong otherwise;
secrets never reach the database; key rotation keeps old coins redeemable."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from ecoin.bank.keys import Item, Opener
from ecoin.bank.ledger import Ledger
from ecoin.bank.sqlite import SqliteStore
from ecoin.bank.vault import Vault, VaultError, coin_hash
from ecoin.common import keyfiles
from ecoin.testing.bank import BankProcess, operation_item
from ecoin.tools import pki as pki_tool

from .helpers import DEVICE_KEY


@pytest.fixture
def offline(pki: Path, tmp_path: Path):
    """A bank that is initialised but not serving, with some history, and its ledger."""
    bank = BankProcess(tmp_path / "bank", pki)
    bank.cli("init")
    ledger = Ledger(SqliteStore(bank.db), Vault.load(tmp_path / "bank" / "master.key"), Opener(pki, 0))
    ledger.create_account("olive", "owner")
    ledger.create_account("alice", "analyst", ["average"])
    ledger.fund("olive", 100)
    ledger.register_device("olive", "dev1", DEVICE_KEY)
    coins = ledger.withdraw("olive", "dev1", 10, "w1").coins
    kid, public = keyfiles.load_coin_public(pki)
    ledger.redeem("alice", [Item(*operation_item(public, kid, c, "average")) for c in coins[:4]])
    ledger.claim("olive", "dev1", coins[4:6])
    ledger.store.close()
    return bank, coins


def tamper(bank: BankProcess, sql: str, *params) -> None:
    with sqlite3.connect(bank.db) as db:
        db.execute(sql, params)


def test_honest_ledger_passes(offline):
    bank, _ = offline
    done = bank.cli("audit")
    assert "audit passed" in done.stdout
    for line in ("minted           10", "outstanding      4", "redeemed         4", "refunded         2"):
        assert line in done.stdout


@pytest.mark.parametrize(
    ("sql", "params", "says"),
    [
        (
            "UPDATE audit SET body = replace(body, '\"count\":10', '\"count\":11') WHERE event = 'mint'",
            (),
            "does not match its hash",
        ),
        ("DELETE FROM audit WHERE seq = 5", (), "entries 5 to 5 are missing"),
        ("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", (), "the head says entry"),
        (
            "UPDATE accounts SET balance = balance + 50 WHERE name = 'olive'",
            (),
            "account olive: balance 142 but its journal entries sum to 92",
        ),
        (
            "UPDATE coins SET state = 2 WHERE hash = (SELECT hash FROM coins WHERE state = 1 LIMIT 1)",
            (),
            "spend records belong to coins that are not redeemed",
        ),
        (
            "DELETE FROM coins WHERE hash = (SELECT hash FROM coins WHERE state = 0 LIMIT 1)",
            (),
            "minted 10 but outstanding 3",
        ),
        (
            "INSERT INTO transfers (at, kind, debit, credit, amount) VALUES (0, 'redeem', 2, 5, 1)",
            (),
            "journal moved 5 units for redeem but 4 coins redeemed",
        ),
    ],
)
@pytest.mark.slow
def test_tampering_is_named(offline, sql, params, says):
    bank, _ = offline
    tamper(bank, sql, *params)
    done = bank.cli("audit", check=False)
    assert done.returncode == 1
    assert says in done.stderr, done.stderr
    assert "audit FAILED" in done.stderr


def test_no_coin_and_no_device_key_at_rest(offline):
    bank, coins = offline
    with sqlite3.connect(bank.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = b"".join(p.read_bytes() for p in Path(bank.db).parent.glob("bank.sqlite3*"))
    assert coin_hash(coins[0]) in data  # the hash is there (the test can see the file)...
    assert not any(c in data for c in coins)  # ...the coins are not
    assert DEVICE_KEY not in data and DEVICE_KEY.hex().encode() not in data
    assert DEVICE_KEY.hex() not in bank.log.read_text() if bank.log.exists() else True


@pytest.mark.slow
def test_insecure_master_key_is_refused(offline):
    bank, _ = offline
    key = bank.workdir / "master.key"
    os.chmod(key, 0o644)
    with pytest.raises(VaultError, match="0600"):
        Vault.load(key)
    done = bank.cli("serve", check=False)
    assert done.returncode == 2 and "must be 0600" in done.stderr and "Traceback" not in done.stderr


def test_key_rotation_keeps_old_coins_redeemable(tmp_path: Path):
    pki_dir = tmp_path / "pki"
    pki_tool.init(pki_dir)
    bank = BankProcess(tmp_path / "bank", pki_dir)
    bank.cli("init")
    vault = Vault.load(tmp_path / "bank" / "master.key")
    ledger = Ledger(SqliteStore(bank.db), vault, Opener(pki_dir, 0))
    ledger.create_account("olive", "owner")
    ledger.create_account("alice", "analyst", ["average"])
    ledger.fund("olive", 10)
    ledger.register_device("olive", "dev1", DEVICE_KEY)
    old = ledger.withdraw("olive", "dev1", 2, "old")
    new_kid = bytes.fromhex(pki_tool.new_coin_key(pki_dir))
    ledger = Ledger(ledger.store, vault, Opener(pki_dir, 0))  # a restart loads every key
    new = ledger.withdraw("olive", "dev1", 2, "new")
    assert (old.kid, new.kid) != (new_kid, new_kid) and new.kid == new_kid
    items = []
    for minted in (old, new):
        kid, public = keyfiles.load_coin_public(pki_dir, minted.kid)
        items += [Item(*operation_item(public, kid, c, "average")) for c in minted.coins]
    assert [r["status"] for r in ledger.redeem("alice", items)] == ["ok"] * 4

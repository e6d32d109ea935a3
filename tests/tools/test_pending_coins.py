"""A priced operation cut in flight: every coin it paid is claimed, not just the first one
(state.bin holds the first; the others are in the coin file)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from ecoin.tools.provisioning import flash
from ecoin.tools.provisioning.refund import _to_claim
from ecoin.tools.provisioning.targets import SimTarget, read_store

COINS = [bytes([i]) * 32 for i in range(1, 7)]
OP = b"P" * 16


def write_store(root: Path, pending: int) -> None:
    root.mkdir()
    (root / "config.json").write_text('{"device_id": "dev-1"}')
    (root / "coins.0.bin").write_bytes(b"".join(COINS))
    nxt = 4  # coins 0 (spent earlier) and 1, 2, 3 (the pending operation's, if pending is 3)
    state = struct.pack(flash.STATE_FMT, flash.MAGIC, 0, nxt, 6, 0, pending, OP, COINS[nxt - pending])
    (root / "state.bin").write_bytes(state)


def test_every_coin_of_a_pending_priced_operation_is_claimed(tmp_path: Path) -> None:
    write_store(tmp_path / "f", pending=3)
    store = read_store(SimTarget(tmp_path / "f"))
    assert store.pending_coins == COINS[1:4]
    assert [(c, op, pending) for c, op, _, pending in _to_claim(store)] == [(c, OP, True) for c in COINS[1:4]]
    body = flash.claim_body(tmp_path / "f", "dev-1")
    assert body["coins"] == [base64.b64encode(c).decode() for c in COINS[1:4]]


def test_a_one_coin_pending_operation_is_read_as_before(tmp_path: Path) -> None:
    write_store(tmp_path / "f", pending=1)
    store = read_store(SimTarget(tmp_path / "f"))
    assert store.pending_coins == [COINS[3]] and store.state is not None and store.state.pending == 1
    assert len(_to_claim(store)) == 1

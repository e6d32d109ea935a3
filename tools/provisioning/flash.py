"""Reads a device's coin store from CPython through the firmware's own layout module
(``firmware/coinstore.py``: FMT, MAGIC, RECORD, COIN and the reasons are defined there once).

``state.bin`` (69 bytes, big-endian): magic ``ECS1`` | gen u32 | next u32 | count u32 |
counter u32 | pending u8 | op_id 16 | coin 32. Coins ``[next, count)`` of ``coins.<gen>.bin``
are unused; ``pending`` is how many coins the operation in flight paid (its first coin is the
``coin`` field). ``doubt.bin``: 64-byte records op_id 16 | coin 32 | reason u8 | 3 zero |
time u32 | 8 zero, one per coin. Both formats are pinned by tests/firmware (the device writes, this reads).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path

from ecoin.firmware import coinstore as layout

STATE_FMT = layout.FMT
STATE_LEN = layout.STATE_LEN
MAGIC = layout.MAGIC
RECORD = layout.RECORD
COIN = layout.COIN
assert struct.calcsize(STATE_FMT) == STATE_LEN

# Why a coin is in doubt: 1..5 are the ERROR codes of docs/PROTOCOL.md 4.3.
REASONS = {
    1: "failed",
    2: "unavailable",
    3: "timeout (gateway)",
    4: "dropped",
    5: "rejected",
    layout.R_TIMEOUT: "no answer",
    layout.R_BAD_TAG: "bad tag",
    layout.R_NOT_SENT: "not acknowledged by the broker",
    layout.R_RESTART: "operation cut (power lost, restart or device error)",
    layout.R_BAD_RESULT: "bad result",
    layout.R_OVERPAID: "charged less than the header held (the rest refundable)",
}


class FlashError(ValueError):
    """The flash directory has no coin store, or a corrupt one."""


@dataclass(frozen=True)
class FlashState:
    gen: int
    next: int
    count: int
    counter: int
    pending_op: bytes | None
    pending_coin: bytes | None  # the first coin of the operation in flight
    pending: int = 0  # how many coins it paid (its price): coins [next - pending, next)

    @property
    def left(self) -> int:
        return self.count - self.next


@dataclass(frozen=True)
class Doubt:
    op_id: bytes
    coin: bytes
    reason: int
    time: int

    @property
    def why(self) -> str:
        return REASONS.get(self.reason, f"code {self.reason}")


def state_bytes(gen: int, nxt: int, count: int, counter: int) -> bytes:
    return struct.pack(STATE_FMT, MAGIC, gen, nxt, count, counter, 0, bytes(16), bytes(32))


def read_state(flash: Path) -> FlashState:
    path = Path(flash) / "state.bin"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        tmp = path.with_name("state.tmp")  # a FAT device that lost power inside its rename
        if not tmp.exists():
            raise FlashError(f"{flash}: no coin store (state.bin)") from None
        raw = tmp.read_bytes()
    if len(raw) != STATE_LEN or raw[:4] != MAGIC:
        raise FlashError(f"{path} is corrupt")
    _, gen, nxt, count, counter, pending, op_id, coin = struct.unpack(STATE_FMT, raw)
    op, first = (op_id, coin) if pending else (None, None)
    return FlashState(gen, nxt, count, counter, op, first, pending)


def read_in_doubt(flash: Path) -> list[Doubt]:
    """Every whole in-doubt record (a torn last one, from a power loss, is left out)."""
    try:
        raw = (Path(flash) / layout.DOUBT).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for p in range(0, len(raw) - RECORD + 1, RECORD):
        rec = raw[p : p + RECORD]
        out.append(Doubt(rec[:16], rec[16:48], rec[48], struct.unpack_from(">I", rec, 52)[0]))
    return out


def read_settled(flash: Path) -> set[bytes]:
    """The op_ids ``settled.bin`` lists (16-byte entries): in-doubt records with a final
    answer, from the owner's claim or a late RESULT the device verified."""
    try:
        raw = (Path(flash) / layout.SETTLED).read_bytes()
    except FileNotFoundError:
        return set()
    return {raw[i : i + 16] for i in range(0, len(raw) - 15, 16)}


def read_coins(flash: Path, state: FlashState | None = None) -> list[bytes]:
    """The coins of the current coin file, used and unused (index < next is used)."""
    state = state or read_state(flash)
    raw = (Path(flash) / f"coins.{state.gen}.bin").read_bytes()[: state.count * COIN]
    return [raw[i : i + COIN] for i in range(0, len(raw), COIN)]


def claim_body(flash: Path, device_id: str) -> dict[str, object]:
    """The body of the bank's ``POST /v1/claims`` for this device's coins in doubt (plus
    the coin of an operation still pending, which a restart would put in doubt)."""
    coins = [d.coin for d in read_in_doubt(flash)]
    state = read_state(flash)
    if state.pending_op:
        used = read_coins(flash, state)[state.next - state.pending : state.next]
        coins += [c for c in used if c not in coins]
    return {"device_id": device_id, "coins": [base64.b64encode(c).decode() for c in coins]}

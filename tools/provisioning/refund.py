"""``ecoin-provision refund`` and ``status``: a device's in-doubt coins, claimed at the bank.

A coin goes "in doubt" on the device when its operation failed or went unanswered
(docs/PROTOCOL.md 1): the device cannot know whether an analyst redeemed it. The owner
sends those coins to the bank (possessing a coin is the proof) and the bank answers per
coin: refunded to the owner, redeemed (by whom, when), already refunded, or unknown.
Claiming twice is harmless: the second answer is "already refunded".

Settling on the device: the firmware's coin store reads ``settled.bin`` as 16-byte op_ids
of in-doubt records the owner has settled, and drops those records. The tool appends the
op_ids of every coin with a final answer. An older firmware without it (no ``settled.bin``
literal in its ``coinstore`` module) keeps the records, and the tool says so; claiming them
again only costs a call.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecoin.common.bank_client import BankClient
from ecoin.firmware import coinstore as layout

from .bundle import MAX_COINS
from .common import BankParams, ProvisionError, bank_client, short_hash
from .targets import Store, Target, read_store, target

SETTLED = layout.SETTLED  # written by the firmware when a late RESULT settles a doubt
FINAL = ("refunded", "redeemed", "already_refunded")


@dataclass(frozen=True)
class CoinClaim:
    """The bank's answer for one in-doubt coin (the coin itself is never kept here)."""

    coin: str  # short hash: the first 12 hex digits of SHA-256(coin)
    op_id: str
    why: str  # why the device put it in doubt
    state: str  # refunded, redeemed, already_refunded, unknown (or outstanding, expired: refund=False)
    by: str | None = None
    at: int | None = None
    pending: bool = False  # the operation was still in flight on the device

    def line(self) -> str:
        text = {
            "refunded": "refunded (+1 to the owner)",
            "redeemed": f"redeemed by {self.by} at {_when(self.at)}",
            "already_refunded": "already refunded",
            "unknown": "unknown (not a coin of this device, or purged after expiry)",
            "outstanding": "outstanding (unspent; would be refunded)",
            "expired": "expired (refunded to the owner at the next purge)",
        }.get(self.state, self.state)
        note = "operation still pending" if self.pending else f"in doubt: {self.why}"
        return f"coin {self.coin}  {text}  [{note}]"


@dataclass
class RefundReport:
    device_id: str
    target: str
    claims: list[CoinClaim] = field(default_factory=list)
    settled: str = "nothing to settle"  # or: "marked N on the device", "not supported by the firmware"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.claims:
            out[c.state] = out.get(c.state, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "target": self.target,
            "claims": [asdict(c) for c in self.claims],
            "counts": self.counts(),
            "settled": self.settled,
        }


def _when(at: int | None) -> str:
    if not at:
        return "?"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _store_of(t: Target, device_id: str) -> Store:
    store = read_store(t)
    if store.state is None:
        raise ProvisionError(f"{t.label}: no coin store (not provisioned?)")
    if store.device_id != device_id:
        raise ProvisionError(f"{t.label} holds device {store.device_id!r}, not {device_id!r}")
    return store


def _to_claim(store: Store) -> list[tuple[bytes, bytes, str, bool]]:
    """(coin, op_id, why, pending) of every unsettled in-doubt coin, and the pending one."""
    out, seen = [], set()
    for d in store.doubts:
        if d.op_id not in store.settled and d.coin not in seen:
            seen.add(d.coin)
            out.append((d.coin, d.op_id, d.why, False))
    st = store.state
    if st and st.pending_op:
        for coin in store.pending_coins:  # one per coin of its price
            if coin not in seen:
                out.append((coin, st.pending_op, "operation in flight", True))
    return out


def firmware_settles(t: Target) -> bool:
    with tempfile.TemporaryDirectory(prefix="ecoin-fw-") as tmp:
        t.fetch(["coinstore.py", "coinstore.mpy"], Path(tmp))
        return any(SETTLED.encode() in p.read_bytes() for p in Path(tmp).iterdir())


def claim_refunds(
    bank: BankClient | BankParams,
    device_id: str,
    *,
    port: str | None = None,
    flash_dir: str | Path | None = None,
    refund: bool = True,
    mark: bool = True,
    mpremote: str | None = None,
) -> RefundReport:
    """Claims the in-doubt coins of the device on ``port`` (a board, through mpremote) or in
    ``flash_dir`` (a simulator). ``refund=False`` only asks the bank (nothing changes)."""
    t = target(port, flash_dir, mpremote)
    store = _store_of(t, device_id)
    todo = _to_claim(store)
    report = RefundReport(device_id, t.label)
    if not todo:
        return report
    answers: list[dict[str, Any]] = []
    with bank_client(bank) as client:
        for i in range(0, len(todo), MAX_COINS):
            answers += client.claim(device_id, [c for c, *_ in todo[i : i + MAX_COINS]], refund=refund)
    for (coin, op_id, why, pending), a in zip(todo, answers, strict=True):
        report.claims.append(
            CoinClaim(short_hash(coin), op_id.hex(), why, str(a["state"]), a.get("by"), a.get("at"), pending)
        )
    if not refund:
        report.settled = "not settled (a check only)"
    elif mark:
        report.settled = _settle(t, todo, report.claims)
    return report


def _settle(t: Target, todo: list[tuple[bytes, bytes, str, bool]], claims: list[CoinClaim]) -> str:
    done = [
        op for (_, op, _, pending), c in zip(todo, claims, strict=True) if c.state in FINAL and not pending
    ]
    if not done:
        return "nothing to settle"
    if not firmware_settles(t):
        return "not supported by the device's firmware (its in-doubt records stay; a new claim is harmless)"
    t.append(SETTLED, b"".join(done))
    return f"marked {len(done)} settled on the device"


def device_status(
    *, port: str | None = None, flash_dir: str | Path | None = None, mpremote: str | None = None
) -> dict[str, Any]:
    """What ``status`` shows: coins left and used, in-doubt records, the top-up counter."""
    t = target(port, flash_dir, mpremote)
    store = read_store(t)
    st = store.state
    if st is None:
        raise ProvisionError(f"{t.label}: no coin store (not provisioned?)")
    return {
        "target": t.label,
        "device_id": store.device_id,
        "service": (store.config or {}).get("service"),
        "coins_left": st.left,
        "coins_used": st.next,
        "generation": st.gen,
        "topup_counter": st.counter,
        "pending": st.pending_coin is not None,
        "in_doubt": [
            {"coin": short_hash(d.coin), "op_id": d.op_id.hex(), "why": d.why, "at": d.time}
            for d in store.doubts
            if d.op_id not in store.settled
        ],
        "settled": len(store.settled),
    }

"""Read-only figures for the dashboard (``ecoin-dashboard``, docs/DASHBOARD.md): one owner's
devices, and the operator's view of the whole bank. Everything is derived from the ledger
as it is (coins, batches, spends, the audit chain); nothing here writes.

"Last seen" is the last time the bank heard of a device: a coin of it redeemed, or a
top-up. The timelines count redemptions per minute over the last hour. The bank cannot
know which coins a device holds in doubt until its owner claims them; what it knows is
shown: coins refunded after such a claim (``refunded``), per device and as a history.
"""

from __future__ import annotations

import json
from typing import Any

from .ledger import Ledger
from .store import OUTSTANDING, REDEEMED, REFUNDED, TREASURY, Tx

BUCKET_S = 60
SPAN_S = 3600
HISTORY = 50  # refunds and claims shown

_SPENT = "FROM spends s JOIN coins c ON c.hash = s.hash JOIN batches b ON b.id = c.batch"


def _first(now: int) -> int:
    """The first minute (in minutes since the epoch) of the last hour's timeline."""
    return now // BUCKET_S - SPAN_S // BUCKET_S + 1


def _timeline(rows: Any, first: int) -> list[int]:
    """Counts per minute from rows of (minute, count), oldest first."""
    counts = [0] * (SPAN_S // BUCKET_S)
    for bucket, n in rows:
        i = int(bucket) - first
        if 0 <= i < len(counts):
            counts[i] += int(n)
    return counts


def owner(ledger: Ledger, name: str) -> dict[str, Any]:
    """One owner's devices (and only theirs) with their coins, activity and claims."""

    def read(tx: Tx) -> dict[str, Any]:
        tx.snapshot()
        now = ledger.now()
        account = ledger._account(tx, name, "owner")
        devices = {d.id: _device_row(d.id) for d in tx.devices(account.id)}
        _coins(tx, account.id, now, devices)
        first = _first(now)
        per_device: dict[str, list[tuple[int, int]]] = {}
        for dev, bucket, n in tx.q(
            f"SELECT b.device, s.at / {BUCKET_S}, COUNT(*) {_SPENT}"  # noqa: S608
            " WHERE b.owner = ? AND s.at >= ? GROUP BY 1, 2",
            (account.id, first * BUCKET_S),
        ).fetchall():
            per_device.setdefault(dev, []).append((int(bucket), int(n)))
        for d in devices.values():
            d["timeline"] = _timeline(per_device.get(d["id"], ()), first)
            d["ops_last_hour"] = sum(d["timeline"])
        spend = [
            {"analyst": r[0], "services": [s for s in str(r[1]).split(",") if s], "coins": int(r[2])}
            for r in tx.q(
                "SELECT a.name, a.services, COUNT(*) "  # noqa: S608
                f"{_SPENT} JOIN accounts a ON a.id = s.analyst WHERE b.owner = ? GROUP BY a.name, a.services"
                " ORDER BY a.name",
                (account.id,),
            ).fetchall()
        ]
        return {
            "owner": account.name,
            "balance": account.balance,
            "now": now,
            "bucket_s": BUCKET_S,
            "start": first * BUCKET_S,
            "devices": sorted(devices.values(), key=lambda d: d["id"]),
            "spend": spend,
            "refunds": _history(tx, "refund", lambda b: b.get("owner") == name, _refund),
            "claims": _claims(tx, account.id),
        }

    return ledger.store.run(read, write=False)


def _device_row(device_id: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "coins_left": 0,
        "redeemed": 0,
        "refunded": 0,
        "expired": 0,
        "last_seen": None,
    }


def _coins(tx: Tx, owner_id: int, now: int, devices: dict[str, dict[str, Any]]) -> None:
    for dev, state, live, n in tx.q(
        "SELECT b.device, c.state, CASE WHEN b.expires > ? THEN 1 ELSE 0 END, COUNT(*)"
        " FROM coins c JOIN batches b ON b.id = c.batch WHERE b.owner = ? GROUP BY 1, 2, 3",
        (now, owner_id),
    ).fetchall():
        d = devices.get(dev)
        if d is None:
            continue
        key = {REDEEMED: "redeemed", REFUNDED: "refunded"}.get(int(state))
        if int(state) == OUTSTANDING:
            key = "coins_left" if int(live) else "expired"
        if key:
            d[key] += int(n)
    seen = tx.q(
        f"SELECT b.device, MAX(s.at) {_SPENT} WHERE b.owner = ? GROUP BY b.device",  # noqa: S608
        (owner_id,),
    ).fetchall()
    topups = tx.q(
        "SELECT device, MAX(created) FROM batches WHERE owner = ? AND op_id IS NOT NULL GROUP BY device",
        (owner_id,),
    ).fetchall()
    for dev, at in [*seen, *topups]:
        if dev in devices and at is not None:
            devices[dev]["last_seen"] = max(int(at), devices[dev]["last_seen"] or 0)


def _refund(at: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"at": at, "device": body.get("device"), "coins": len(body.get("coins", ()))}


def _history(tx: Tx, event: str, mine: Any, shape: Any) -> list[dict[str, Any]]:
    """The latest entries of one kind in the audit chain that ``mine`` accepts."""
    out = []
    for at, body in tx.q(
        "SELECT at, body FROM audit WHERE event = ? ORDER BY seq DESC LIMIT ?", (event, 20 * HISTORY)
    ).fetchall():
        data = json.loads(body)
        if mine(data):
            out.append(shape(int(at), data))
            if len(out) == HISTORY:
                break
    return out


def _claims(tx: Tx, owner_id: int) -> list[dict[str, Any]]:
    rows = tx.q(
        "SELECT dc.device, dc.claimed, a.name FROM device_claims dc JOIN accounts a ON a.id = dc.armed_by"
        " WHERE dc.claimed_by = ? ORDER BY dc.claimed DESC LIMIT ?",
        (owner_id, HISTORY),
    ).fetchall()
    return [{"device": r[0], "at": int(r[1]), "from": r[2]} for r in rows]


def operator(ledger: Ledger) -> dict[str, Any]:
    """The whole bank: analysts' services and earnings, coins, throughput over the last hour."""

    def read(tx: Tx) -> dict[str, Any]:
        tx.snapshot()
        now = ledger.now()
        first = _first(now)
        accounts = [a for a in tx.accounts() if a.kind != "system"]
        analysts = [
            {"id": a.name, "services": list(a.services), "earned": a.balance}
            for a in accounts
            if a.kind == "analyst"
        ]
        states = {
            int(s): int(n) for s, n in tx.q("SELECT state, COUNT(*) FROM coins GROUP BY state").fetchall()
        }
        redeemed = tx.q(
            f"SELECT at / {BUCKET_S}, COUNT(*) FROM spends WHERE at >= ? GROUP BY 1",  # noqa: S608
            (first * BUCKET_S,),
        ).fetchall()
        minted = tx.q(
            f"SELECT created / {BUCKET_S}, SUM(count) FROM batches WHERE created >= ? GROUP BY 1",  # noqa: S608
            (first * BUCKET_S,),
        ).fetchall()
        treasury = tx.account(TREASURY)
        return {
            "now": now,
            "bucket_s": BUCKET_S,
            "start": first * BUCKET_S,
            "analysts": analysts,
            "owners": sum(1 for a in accounts if a.kind == "owner"),
            "devices": len(tx.devices()),
            "coins": {
                "outstanding": states.get(OUTSTANDING, 0),
                "redeemed": states.get(REDEEMED, 0),
                "refunded": states.get(REFUNDED, 0),
            },
            "treasury": treasury.balance if treasury else 0,
            "redeemed_per_min": _timeline(redeemed, first),
            "minted_per_min": _timeline(minted, first),
        }

    return ledger.store.run(read, write=False)

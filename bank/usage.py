"""The SQL of owner policies and of the usage tally (schema 3), on a ``store.Tx``.

``usage`` counts the coins spent per (device, UTC day, analyst, service), written in the
transaction of the spend; it is never purged, so the caps and the statements outlive the
coins and spends that an expiry deletes. The audit checks that it sums to the coins
redeemed. ``policies`` holds one JSON policy per (owner, device); device "" is the owner's
default. Both run unchanged on SQLite and PostgreSQL, like the rest of the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from . import policy as rules
from .store import Tx

DEFAULT = ""  # the device column of an owner's default policy


def put_policy(tx: Tx, owner: int, device: str, p: rules.Policy | None, at: int) -> None:
    """Sets (or, with None, removes) the policy of one device or the owner's default."""
    tx.q("DELETE FROM policies WHERE owner = ? AND device = ?", (owner, device))
    if p is not None:
        text = json.dumps(p.as_dict(), sort_keys=True)
        tx.q(
            "INSERT INTO policies (owner, device, body, updated) VALUES (?, ?, ?, ?)",
            (owner, device, text, at),
        )


def policies_of(tx: Tx, owner: int) -> dict[str, rules.Policy]:
    """{device or DEFAULT: policy} of one owner."""
    rows = tx.q("SELECT device, body FROM policies WHERE owner = ? ORDER BY device", (owner,)).fetchall()
    return {str(d): rules.parse(json.loads(b)) for d, b in rows}


def applying(tx: Tx, devices: Iterable[tuple[int, str]]) -> dict[str, rules.Policy]:
    """{device: the policy that applies to it} for (owner, device) pairs: the device's own,
    else its owner's default; devices under neither are left out."""
    pairs = set(devices)
    owners = sorted({o for o, _ in pairs})
    if not owners:
        return {}
    cond, params = tx.any_of("owner", owners)
    rows = tx.q(f"SELECT owner, device, body FROM policies WHERE {cond}", params).fetchall()  # noqa: S608
    found = {(int(o), str(d)): b for o, d, b in rows}
    out: dict[str, rules.Policy] = {}
    for owner, device in pairs:
        body = found.get((owner, device), found.get((owner, DEFAULT)))
        if body is not None:
            out[device] = rules.parse(json.loads(body))
    return out


def spent(tx: Tx, devices: Sequence[str], now: int) -> dict[str, tuple[int, int]]:
    """{device: (coins spent today, this month)}. Each device's row is locked first (an
    update that changes nothing), in id order, so that two redemptions of one device
    cannot both pass its cap: on PostgreSQL the second waits, then retries (serialisation
    failure) and counts what the first spent. Devices come before coins in the lock order."""
    if not devices:
        return {}
    for device in sorted(devices):
        tx.q("UPDATE devices SET counter = counter WHERE id = ?", (device,))
    today = rules.day_of(now)
    cond, params = tx.any_of("device", list(devices))
    rows = tx.q(
        "SELECT device, SUM(CASE WHEN day = ? THEN coins ELSE 0 END), SUM(coins) FROM usage"  # noqa: S608
        f" WHERE {cond} AND day >= ? AND day <= ? GROUP BY device",
        [today, *params, rules.month_start(today), today],
    ).fetchall()
    return {str(d): (int(t), int(m)) for d, t, m in rows}


def add(tx: Tx, analyst: int, rows: Iterable[tuple[int, str, str]], now: int) -> None:
    """Counts spent coins: ``rows`` holds (owner, device, service) once per coin."""
    tally: dict[tuple[int, str, str], int] = {}
    for key in rows:
        tally[key] = tally.get(key, 0) + 1
    day = rules.day_of(now)
    tx.many(
        "INSERT INTO usage (device, day, analyst, service, owner, coins) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device, day, analyst, service) DO UPDATE SET coins = usage.coins + excluded.coins",
        [(d, day, analyst, s, o, n) for (o, d, s), n in sorted(tally.items())],
    )


def owner_usage(tx: Tx, owner: int, first: int, last: int) -> list[tuple[str, str, str, int, int]]:
    """(device, analyst name, service, day, coins) of an owner's devices, days first..last.
    Spends from before schema 3 have service "" and, for purged batches, analyst "" too."""
    rows = tx.q(
        "SELECT u.device, COALESCE(a.name, ''), u.service, u.day, u.coins FROM usage u"
        " LEFT JOIN accounts a ON a.id = u.analyst WHERE u.owner = ? AND u.day >= ? AND u.day <= ?"
        " ORDER BY u.day, u.device, u.service",
        (owner, first, last),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


def analyst_usage(tx: Tx, analyst: int, first: int, last: int) -> list[tuple[str, int, int]]:
    """(service, day, coins) an analyst earned, days first..last."""
    rows = tx.q(
        "SELECT service, day, SUM(coins) FROM usage WHERE analyst = ? AND day >= ? AND day <= ?"
        " GROUP BY service, day ORDER BY day, service",
        (analyst, first, last),
    ).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


def journal(tx: Tx, account: int, first: int, last: int) -> dict[str, int]:
    """{transfer kind: units} moved to or from an account, days first..last."""
    rows = tx.q(
        "SELECT kind, SUM(amount) FROM transfers WHERE (debit = ? OR credit = ?) AND at >= ? AND at < ?"
        " GROUP BY kind",
        (account, account, first * rules.DAY, (last + 1) * rules.DAY),
    ).fetchall()
    return {str(k): int(v) for k, v in rows}


def outstanding(tx: Tx, owner: int, first: int, last: int) -> dict[str, int]:
    """{device: coins still outstanding} of an owner's batches minted days first..last."""
    rows = tx.q(
        "SELECT b.device, COUNT(*) FROM coins c JOIN batches b ON b.id = c.batch"
        " WHERE b.owner = ? AND c.state = 0 AND b.created >= ? AND b.created < ? GROUP BY b.device",
        (owner, first * rules.DAY, (last + 1) * rules.DAY),
    ).fetchall()
    return {str(d): int(n) for d, n in rows}


def total(tx: Tx) -> int:
    """Every coin the usage tally counts (the audit compares it with the coins redeemed)."""
    return int(tx.q("SELECT COALESCE(SUM(coins), 0) FROM usage").fetchone()[0])


def describe(p: rules.Policy | None) -> dict[str, Any] | None:
    return None if p is None else p.as_dict()

"""THE spend of a batch of redemptions, inside the ledger's transaction (``Ledger.redeem``).

A header pays with 1 to 4 coins (PROTOCOL.md 4.1); the ledger hands over only the first
``price`` of them (the analyst's price: the others stay outstanding, refundable), and those
are paid in full or not at all: one conditional statement spends every outstanding coin of
the batch, each header then keeps its coins only if *all* of them were spent now and by no
earlier header of the batch, and the coins of a header that could not take all of its own
go back to outstanding before the transaction ends (nobody else ever saw them spent). The
analyst is credited one unit per coin spent, so a 3-coin price credits 3.

A spend stores, per coin, the analyst, op_id and digest: the same analyst retrying the same
operation (same op_id and digest for every coin of the header) gets the same keys again;
anything else for a spent coin is "already spent".
"""

from __future__ import annotations

from typing import Any

from . import usage
from .keys import Opened
from .store import OUTSTANDING, Account, CoinState, Spend, Tx

Todo = list[tuple[int, Opened]]  # (index of the item in the request, what its header holds)


def refused(code: str, message: str) -> dict[str, Any]:
    return {"status": "refused", "code": code, "message": message}


def ok(o: Opened) -> dict[str, Any]:
    return {"status": "ok", "k_enc": o.k_enc, "k_mac": o.k_mac, "iv": o.iv, "coins": len(o.hashes)}


def spend(
    tx: Tx, analyst: Account, todo: Todo, now: int, coins_account: int, owners: dict[bytes, tuple[int, str]]
) -> dict[int, dict[str, Any]]:
    """Spends what can be spent; returns one result per item index of ``todo``. ``owners``
    gives (owner, device) of each outstanding coin, for the usage counters of the policies."""
    hashes = list(dict.fromkeys(h for _, o in todo for h in o.hashes))
    spent = tx.spend(hashes, now)
    owner: dict[bytes, int] = {}  # coin hash -> position in todo of the header it paid for now
    for k, (_, o) in enumerate(todo):
        if all(h in spent and h not in owner for h in o.hashes):
            owner.update(dict.fromkeys(o.hashes, k))
    loose = {h for h in spent if h not in owner}
    if loose:  # all or nothing: a header short of one of its coins spends none of them
        tx.unspend(sorted(loose))
    if owner:
        rows = [(h, analyst.id, todo[k][1].op_id, now, todo[k][1].digest) for h, k in sorted(owner.items())]
        tx.spends_add(rows)
        tx.transfer(coins_account, analyst.id, len(owner), "redeem", now)
        usage.add(tx, analyst.id, [(*owners[h], todo[k][1].service) for h, k in owner.items()], now)
        tx.audit("redeem", {"analyst": analyst.name, "coins": sorted(h.hex() for h in owner)}, now)
    others = [h for h in hashes if h not in owner]
    prior = tx.spends(others) if others else {}
    unsold = [h for h in others if h not in prior and h not in loose]
    states = tx.coin_states(unsold) if unsold else {}
    out: dict[int, dict[str, Any]] = {}
    for k, (i, o) in enumerate(todo):
        if all(owner.get(h) == k for h in o.hashes):  # the usual case: paid by it, now
            out[i] = ok(o)
        else:
            out[i] = _answer(o, [_mark(analyst, o, h, todo, owner, prior, loose, states) for h in o.hashes])
    return out


def repeats(tx: Tx, analyst: Account, todo: Todo) -> dict[int, dict[str, Any]]:
    """Items that only ask (``repeat``): the keys again if this analyst paid for this very
    operation with every coin of the header, else a refusal; nothing is spent either way.
    An analyst whose redemption's answer was lost asks this once the bank is back, past the
    deadline after which it would no longer spend (docs/BANK_API.md)."""
    prior = tx.spends(list(dict.fromkeys(h for _, o in todo for h in o.hashes)))
    out: dict[int, dict[str, Any]] = {}
    for i, o in todo:
        if all(h in prior and _paid_for(prior[h], analyst, o) for h in o.hashes):
            out[i] = ok(o)
        elif any(h in prior for h in o.hashes):
            out[i] = refused("already_spent", "a coin of the header was not spent for this operation")
        else:
            out[i] = refused("not_spent", "nothing was spent for this operation")
    return out


def _mark(
    analyst: Account,
    o: Opened,
    h: bytes,
    todo: Todo,
    owner: dict[bytes, int],
    prior: dict[bytes, Spend],
    loose: set[bytes],
    states: dict[bytes, CoinState],
) -> Any:
    """For one coin of a header: True if it pays for this very operation (now or before),
    False if it paid for another, None if it is unspent but fine, or the refusal it causes."""
    if h in owner:
        first = todo[owner[h]][1]
        return (first.op_id, first.digest) == (o.op_id, o.digest)
    if h in prior:
        return _paid_for(prior[h], analyst, o)
    if h in loose:
        return None
    return _unspendable(states.get(h))


def _paid_for(p: Spend, analyst: Account, o: Opened) -> bool:
    """Whether an earlier spend paid for this very operation, by this analyst."""
    return (p.analyst, p.op_id, p.digest) == (analyst.name, o.op_id, o.digest)


def _answer(o: Opened, marks: list[Any]) -> dict[str, Any]:
    if all(m is True for m in marks):
        return ok(o)
    if any(m is False for m in marks):
        return refused("already_spent", "the coin was already spent")
    for m in marks:
        if isinstance(m, dict):
            return m
    return refused("already_spent", "a coin of the header was already spent")  # mixed: some paid


def _unspendable(state: CoinState | None) -> dict[str, Any]:
    """Why a coin that is not spent, and was not spent now, cannot be spent."""
    if state is None:
        return refused("unknown_coin", "no such coin (never minted, or purged after expiry)")
    if state.state == OUTSTANDING:  # not spent now, so its batch has expired
        return refused("expired", "the coin has expired")
    return refused("already_spent", "the coin was refunded to its owner")

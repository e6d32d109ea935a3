"""``ecoin-bank audit``: checks the hash chain and reconciles the ledger, in one snapshot.

It reports every problem it finds, in words that say exactly what is wrong:
- the audit chain: contiguous sequence numbers, each hash recomputed from the previous one,
  and the head row pointing at the last entry;
- coins, per batch and in total: minted = outstanding + redeemed + refunded + expired, and
  the totals agree with the audit log and with the journal;
- no coin both redeemed and refunded (a spend record for every redeemed coin, and only for them);
- balances: every account's balance equals the sum of its journal entries, coins in
  circulation equal the ``@coins`` account, analysts hold exactly what was redeemed, and no
  owner or analyst is below zero;
- devices: claims used and devices decommissioned agree with the chain, and no
  decommissioned device has an outstanding coin (``claims.audit_problems``).
- the usage tally (caps and statements) counts exactly the coins redeemed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import claims, usage
from .store import COINS, EXPIRED, GENESIS, OUTSTANDING, REDEEMED, REFUNDED, TREASURY, Store, Tx, audit_hash

PAGE = 10_000
DEVICE_EVENTS = ("claim", "transfer", "decommission")  # counted, checked by claims.audit_problems


@dataclass
class Report:
    figures: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store) -> Report:
    def check(tx: Tx) -> Report:
        tx.snapshot()
        report = Report()
        logged = _chain(tx, report)
        coins = _coins(tx, report)
        _journal(tx, report, coins)
        for what in ("minted", "redeemed", "refunded", "expired"):
            if logged[what] != coins[what]:
                report.problems.append(
                    f"audit log records {logged[what]} coins {what} but the ledger holds {coins[what]}"
                )
        report.problems.extend(claims.audit_problems(tx, logged))
        report.figures.update(coins)
        report.figures["funded"] = logged["funded"]
        for event in DEVICE_EVENTS:
            report.figures[event + "s"] = logged[event]
        return report

    return store.run(check, write=False)


def _chain(tx: Tx, report: Report) -> dict[str, int]:
    tally = dict.fromkeys(("minted", "redeemed", "refunded", "expired", "funded", *DEVICE_EVENTS), 0)
    prev, last = GENESIS, 0
    while True:
        entries = tx.audit_entries(last, PAGE)
        for seq, at, event, body, digest in entries:
            if seq != last + 1:
                report.problems.append(f"audit chain: entries {last + 1} to {seq - 1} are missing")
            if audit_hash(prev, seq, at, event, body) != digest:
                report.problems.append(f"audit chain: entry {seq} ({event}) does not match its hash")
            _tally(tally, event, body, seq, report)
            prev, last = digest, seq
        if len(entries) < PAGE:
            break
    head_seq, head_hash = tx.audit_head()
    if (head_seq, head_hash) != (last, prev):
        report.problems.append(
            f"audit chain: the head says entry {head_seq} but the log ends at entry {last}"
        )
    report.figures["audit_entries"] = last
    return tally


def _tally(tally: dict[str, int], event: str, body: str, seq: int, report: Report) -> None:
    try:
        data = json.loads(body)
        if event == "mint":
            tally["minted"] += int(data["count"])
        elif event in ("redeem", "refund"):
            tally[event + "ed"] += len(data["coins"])
        elif event == "expire":
            tally["expired"] += int(data["coins"])
        elif event == "fund":
            tally["funded"] += int(data["amount"])
        elif event in DEVICE_EVENTS:
            tally[event] += 1 if data["device"] else 0
    except (ValueError, KeyError, TypeError):
        report.problems.append(f"audit chain: entry {seq} ({event}) has an unreadable body")


def _coins(tx: Tx, report: Report) -> dict[str, int]:
    rows = tx.coin_counts()
    totals = dict.fromkeys(("minted", "outstanding", "redeemed", "refunded", "expired"), 0)
    for batch, minted, expired, f_redeemed, f_refunded, purged in tx.batch_counts():
        live = [rows.pop((batch, s), 0) for s in (OUTSTANDING, REDEEMED, REFUNDED, EXPIRED)]
        if live[3]:
            report.problems.append(f"batch {batch}: {live[3]} coins left in the transient expired state")
        if purged and any(live):
            report.problems.append(f"batch {batch}: purged, yet {sum(live)} of its coins remain")
        parts = (live[0], live[1] + f_redeemed, live[2] + f_refunded, expired)
        if minted != sum(parts):
            report.problems.append(
                f"batch {batch}: minted {minted} but outstanding {parts[0]} + redeemed {parts[1]}"
                f" + refunded {parts[2]} + expired {parts[3]} = {sum(parts)}"
            )
        for name, n in zip(
            ("minted", "outstanding", "redeemed", "refunded", "expired"), (minted, *parts), strict=True
        ):
            totals[name] += n
    for (batch, _state), n in sorted(rows.items()):
        report.problems.append(f"{n} coins belong to batch {batch}, which does not exist")
    orphan, missing = tx.spend_mismatches()
    if orphan:
        report.problems.append(
            f"{orphan} spend records belong to coins that are not redeemed (refunded or gone)"
        )
    if missing:
        report.problems.append(f"{missing} redeemed coins have no spend record")
    return totals


def _journal(tx: Tx, report: Report, coins: dict[str, int]) -> None:
    sums = tx.journal_sums()
    analysts = 0
    for a in tx.accounts():
        if a.balance != sums.get(a.id, 0):
            report.problems.append(
                f"account {a.name}: balance {a.balance} but its journal entries sum to {sums.get(a.id, 0)}"
            )
        if a.kind != "system" and a.balance < 0:
            report.problems.append(f"account {a.name}: negative balance {a.balance}")
        if a.name == COINS and a.balance != coins["outstanding"]:
            report.problems.append(f"{coins['outstanding']} coins outstanding but {COINS} holds {a.balance}")
        if a.name == TREASURY:
            report.figures["treasury"] = a.balance
        if a.kind == "analyst":
            analysts += a.balance
    tallied = usage.total(tx)
    if tallied != coins["redeemed"]:
        report.problems.append(
            f"the usage tally counts {tallied} coins spent but {coins['redeemed']} were redeemed"
        )
    if analysts != coins["redeemed"]:
        report.problems.append(f"analysts hold {analysts} but {coins['redeemed']} coins were redeemed")
    kinds = tx.journal_kinds()
    pairs = (("withdraw", "minted"), ("redeem", "redeemed"), ("refund", "refunded"), ("expire", "expired"))
    for kind, what in pairs:
        if kinds.get(kind, 0) != coins[what]:
            report.problems.append(
                f"journal moved {kinds.get(kind, 0)} units for {kind} but {coins[what]} coins {what}"
            )
    if sum(sums.values()) != 0:
        report.problems.append(f"the journal does not balance: entries sum to {sum(sums.values())}")

"""What an owner sets and reads beyond coins: its policies, and the statements of owners
and analysts for a period (docs/BANK_API.md, "Policies" and "Statements").

A statement is read in one snapshot, from the usage tally (spends per device, day,
analyst and service) and the journal (coins bought, refunded, expired). Over a period
that covers everything, an owner's coins bought equal spent + refunded + expired +
outstanding, and an analyst's earnings equal its balance; the tests check both.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from typing import Any

from ecoin.common import bank_errors as errors

from . import policy as rules
from . import usage
from .store import Account, Store, Tx

EPOCH = dt.date(1970, 1, 1)
PERIOD_MAX = 3660  # days in one statement (ten years)
UNRECORDED = "unrecorded"  # the service (or analyst) of a spend made before schema 3


def day_number(text: Any, name: str) -> int:
    """A YYYY-MM-DD date (UTC) as a day number; anything else is ``Malformed``."""
    try:
        if isinstance(text, str) and len(text) == 10:
            return (dt.date.fromisoformat(text) - EPOCH).days
    except ValueError:
        pass
    raise errors.Malformed(f"{name!r} must be a date YYYY-MM-DD")


def date_text(day: int) -> str:
    return (EPOCH + dt.timedelta(days=day)).isoformat()


class Books:
    def __init__(self, store: Store, now: Callable[[], int]) -> None:
        self.store = store
        self.now = now

    @staticmethod
    def _account(tx: Tx, name: str, kind: str) -> Account:
        account = tx.account(name)
        if account is None or account.kind != kind:
            raise errors.UnknownAccount(f"no {kind} account {name}")
        return account

    # Policies.

    def set_policy(self, owner: str, device: str | None, raw: Any) -> dict[str, Any] | None:
        """Sets a device's policy (device None: the owner's default); ``raw`` None removes
        it. Every change is an audit entry. Returns the policy now in force there."""
        p = None if raw is None else rules.parse(raw)

        def put(tx: Tx) -> dict[str, Any] | None:
            now = self.now()
            account = self._account(tx, owner, "owner")
            if device is not None:
                d = tx.device(device)
                if d is None or d.owner != account.id:
                    raise errors.UnknownDevice(f"no device {device} of {owner}")
            usage.put_policy(tx, account.id, device or usage.DEFAULT, p, now)
            body = {"owner": owner, "device": device, "policy": usage.describe(p)}
            tx.audit("policy", body, now)
            return usage.describe(p)

        return self.store.run(put)

    def policies(self, owner: str) -> dict[str, Any]:
        def read(tx: Tx) -> dict[str, Any]:
            found = usage.policies_of(tx, self._account(tx, owner, "owner").id)
            default = found.pop(usage.DEFAULT, None)
            return {"default": usage.describe(default), "devices": {d: p.as_dict() for d, p in found.items()}}

        return self.store.run(read, write=False)

    # Statements.

    def _period(self, first: int | None, last: int | None) -> tuple[int, int]:
        today = rules.day_of(self.now())
        first = today if first is None else first
        last = today if last is None else last
        if last < first or last - first >= PERIOD_MAX:
            raise errors.Malformed(f"the period must run forward, {PERIOD_MAX} days at most")
        return first, last

    def owner_statement(
        self, owner: str, first: int | None = None, last: int | None = None
    ) -> dict[str, Any]:
        first, last = self._period(first, last)

        def read(tx: Tx) -> dict[str, Any]:
            tx.snapshot()
            account = self._account(tx, owner, "owner")
            by_device: dict[str, int] = {}
            by_service: dict[str, int] = {}
            by_analyst: dict[str, int] = {}
            for device, analyst, service, _day, coins in usage.owner_usage(tx, account.id, first, last):
                service, analyst = service or UNRECORDED, analyst or UNRECORDED
                for tally, key in ((by_device, device), (by_service, service), (by_analyst, analyst)):
                    tally[key] = tally.get(key, 0) + coins
            moved = usage.journal(tx, account.id, first, last)
            doubt = usage.outstanding(tx, account.id, first, last)
            return {
                "owner": owner,
                "from": date_text(first),
                "to": date_text(last),
                "funded": moved.get("fund", 0),
                "bought": moved.get("withdraw", 0),
                "spent": sum(by_device.values()),
                "spent_by_device": by_device,
                "spent_by_service": by_service,
                "spent_by_analyst": by_analyst,
                "refunded": moved.get("refund", 0),
                "expired": moved.get("expire", 0),
                "outstanding": sum(doubt.values()),
                "outstanding_by_device": doubt,
                "balance": account.balance,
            }

        return self.store.run(read, write=False)

    def analyst_statement(
        self, analyst: str, first: int | None = None, last: int | None = None
    ) -> dict[str, Any]:
        first, last = self._period(first, last)

        def read(tx: Tx) -> dict[str, Any]:
            tx.snapshot()
            account = self._account(tx, analyst, "analyst")
            rows = usage.analyst_usage(tx, account.id, first, last)
            by_service: dict[str, int] = {}
            rows = [(s or UNRECORDED, d, n) for s, d, n in rows]
            for service, _day, coins in rows:
                by_service[service] = by_service.get(service, 0) + coins
            return {
                "analyst": analyst,
                "from": date_text(first),
                "to": date_text(last),
                "earned": sum(by_service.values()),
                "earned_by_service": by_service,
                "earned_by_day": [{"day": date_text(d), "service": s, "coins": n} for s, d, n in rows],
                "balance": account.balance,
            }

        return self.store.run(read, write=False)


def to_csv(statement: dict[str, Any]) -> str:
    """A statement as CSV rows ``section,key,coins`` (one line per figure), the same for
    owners and analysts, so a spreadsheet can sum any section."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("section", "key", "coins"))
    for name, value in statement.items():
        if isinstance(value, dict):
            w.writerows((name, k, v) for k, v in sorted(value.items()))
        elif isinstance(value, list):
            w.writerows((name, f"{r['day']} {r['service']}", r["coins"]) for r in value)
        else:
            w.writerow(("total" if isinstance(value, int) else "about", name, value))
    return out.getvalue()

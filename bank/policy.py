"""Owner policies: the rules a device's coins obey, checked by the bank before it pays.

An owner sets one policy per device and a default for its devices without one (a device's
policy replaces the default whole; no merging, so what applies is always one readable
object). A policy may restrict:

    services     the services its coins may pay (absent: any)
    analysts     the analysts its coins may pay (absent: any)
    daily_cap    coins the device may spend per UTC day
    monthly_cap  coins the device may spend per UTC calendar month
    not_before   unix seconds before which its coins may pay nothing
    not_after    unix seconds after which its coins may pay nothing

This module is pure (no SQL, no clock): the ledger gives it the policy, what the device
already spent today and this month, and the time. ``Police`` checks one redemption batch:
items are taken in order and each one's cost counts against the caps of the items after
it, so a batch can never overshoot a cap. Costs are in coins, so an operation that pays
several coins counts them all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ecoin.common import bank_errors as errors
from ecoin.common import names

DAY = 86_400
LIST_MAX = 64
INT_MAX = 2**53 - 1
FIELDS = ("services", "analysts", "daily_cap", "monthly_cap", "not_before", "not_after")

# The refusal codes, in the order the rules are checked (docs/BANK_API.md).
WINDOW, ANALYST, SERVICE, DAILY, MONTHLY = (
    "policy_window",
    "policy_analyst",
    "policy_service",
    "policy_daily_cap",
    "policy_monthly_cap",
)
CODES = (WINDOW, ANALYST, SERVICE, DAILY, MONTHLY)


@dataclass(frozen=True)
class Policy:
    services: frozenset[str] | None = None
    analysts: frozenset[str] | None = None
    daily_cap: int | None = None
    monthly_cap: int | None = None
    not_before: int | None = None
    not_after: int | None = None

    @property
    def capped(self) -> bool:
        return self.daily_cap is not None or self.monthly_cap is not None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: only the rules that are set, lists sorted (stable audit bodies)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = sorted(value) if isinstance(value, frozenset) else value
        return out


def parse(raw: Any) -> Policy:
    """A policy from its JSON form; anything unexpected raises ``Malformed`` naming the field."""
    if not isinstance(raw, dict):
        raise errors.Malformed("a policy must be a JSON object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise errors.Malformed(f"unknown policy field(s) {', '.join(map(repr, unknown))}; known: {FIELDS}")
    values: dict[str, Any] = {}
    for name, check, rule in (
        ("services", names.is_service, names.SERVICE_RULE),
        ("analysts", names.is_id, names.ID_RULE),
    ):
        if raw.get(name) is not None:
            values[name] = _names(raw[name], name, check, rule)
    for name in ("daily_cap", "monthly_cap", "not_before", "not_after"):
        if raw.get(name) is not None:
            values[name] = _int(raw[name], name)
    p = Policy(**values)
    if p.not_before is not None and p.not_after is not None and p.not_after < p.not_before:
        raise errors.Malformed("'not_after' must not be before 'not_before'")
    return p


def _names(value: Any, name: str, check: Callable[[str], bool], rule: str) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > LIST_MAX:
        raise errors.Malformed(f"{name!r} must be a list of at most {LIST_MAX} names")
    for v in value:
        if not isinstance(v, str) or not check(v):
            raise errors.Malformed(f"{name!r}: {v!r} is not a name ({rule})")
    return frozenset(value)


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT_MAX:
        raise errors.Malformed(f"{name!r} must be an integer from 0 to {INT_MAX}")
    return int(value)


def day_of(at: int) -> int:
    """The UTC day number of unix time ``at`` (days since 1970-01-01)."""
    return at // DAY


def month_start(day: int) -> int:
    """The day number of the first day of ``day``'s UTC calendar month."""
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return day - (date.day - 1)


class Police:
    """Decides one batch: ``check`` per item, in order, against the device's policy and
    its spending (``spent[device] = (today, this month)``, updated as items pass)."""

    def __init__(self, policies: Mapping[str, Policy], spent: dict[str, tuple[int, int]], now: int) -> None:
        self.policies = policies
        self.spent = spent
        self.now = now

    def check(self, device: str, analyst: str, service: str, cost: int) -> str | None:
        """None if the payment is allowed (and counted), else the refusal code."""
        p = self.policies.get(device)
        if p is None:
            return None
        code = _rule(p, analyst, service, self.now)
        today, month = self.spent.get(device, (0, 0))
        if code is None and p.daily_cap is not None and today + cost > p.daily_cap:
            code = DAILY
        if code is None and p.monthly_cap is not None and month + cost > p.monthly_cap:
            code = MONTHLY
        if code is None:
            self.spent[device] = (today + cost, month + cost)
        return code


def _rule(p: Policy, analyst: str, service: str, now: int) -> str | None:
    if (p.not_before is not None and now < p.not_before) or (p.not_after is not None and now > p.not_after):
        return WINDOW
    if p.analysts is not None and analyst not in p.analysts:
        return ANALYST
    if p.services is not None and service not in p.services:
        return SERVICE
    return None


MESSAGES = {
    WINDOW: "the owner's policy does not allow payments at this time",
    ANALYST: "the owner's policy does not allow paying this analyst",
    SERVICE: "the owner's policy does not allow paying for this service",
    DAILY: "the device's daily coin cap would be exceeded",
    MONTHLY: "the device's monthly coin cap would be exceeded",
}

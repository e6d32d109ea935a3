"""The command-line flags of policies and statements, shared by ``ecoin-bank`` (an admin,
on the bank's host) and ``ecoin-provision`` (an owner, through the API with its
certificate), so both spell a policy the same way. The bank checks what they build
(docs/BANK_API.md, "Policies"); this module only turns flags into that JSON.

    policy set [--device ID] --service average --analyst alice --daily-cap 50 \\
        --monthly-cap 1000 --not-before 2026-12-01 --not-after 2027-12-01T00:00:00
    policy set [--device ID] --json '{"services": ["average"]}'
    statement --from 2026-12-01 --to 2026-12-31 --format csv
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any


def when(text: str) -> int:
    """Unix seconds from unix seconds, a date (midnight UTC) or an ISO time (UTC unless it
    says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not unix seconds, YYYY-MM-DD or an ISO time") from None
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp())


def add_policy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="the device (default: the owner's default policy)")
    p.add_argument("--service", action="append", help="a service its coins may pay (repeat; default any)")
    p.add_argument("--analyst", action="append", help="an analyst its coins may pay (repeat; default any)")
    p.add_argument("--daily-cap", type=int, help="coins per device per UTC day")
    p.add_argument("--monthly-cap", type=int, help="coins per device per UTC calendar month")
    p.add_argument("--not-before", type=when, help="no payment before (unix seconds, date or ISO time)")
    p.add_argument("--not-after", type=when, help="no payment after (unix seconds, date or ISO time)")
    p.add_argument("--json", dest="policy_json", help="the whole policy as JSON instead of the flags")


def policy_from(args: argparse.Namespace) -> dict[str, Any]:
    """The policy's JSON form from the flags (or ``--json``, which must be an object)."""
    if args.policy_json is not None:
        try:
            raw = json.loads(args.policy_json)
        except ValueError as exc:
            raise ValueError(f"--json is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("--json must be a JSON object")
        return raw
    pairs = (
        ("services", args.service),
        ("analysts", args.analyst),
        ("daily_cap", args.daily_cap),
        ("monthly_cap", args.monthly_cap),
        ("not_before", args.not_before),
        ("not_after", args.not_after),
    )
    return {k: v for k, v in pairs if v is not None}


def add_period_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (UTC; default today)")
    p.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (UTC; default today)")
    p.add_argument(
        "--format", choices=("json", "csv"), default="json", help="json (default) or csv, one line per entry"
    )

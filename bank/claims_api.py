"""The API of claims, transfers and decommissioning (owners) and of the dashboard's reads
(the ``dashboard`` role), registered beside the router's own routes (docs/BANK_API.md).

The dashboard's certificate may read any owner's overview and claim or transfer for an
owner it has logged in (docs/DASHBOARD.md); it cannot withdraw, fund, redeem, top up or
decommission. An owner's own certificate does all of it for its own devices only.
"""

from __future__ import annotations

import re
from typing import Any

from ecoin.common import bank_errors as errors
from ecoin.common import claim_uri, names
from ecoin.protocol import wire

from . import overview
from .claims import Claimed, Claims
from .ledger import Ledger
from .router import Identity, Route, _hex, _str


def _secret(body: dict[str, Any]) -> str:
    secret = _str(body, "secret", 128)
    if not claim_uri.SECRET.match(secret):
        raise errors.Malformed("'secret' must be 22 to 128 characters of base64url")
    return secret


def _claimed(c: Claimed) -> dict[str, Any]:
    return {"device_id": c.device_id, "owner": c.owner, "previous": c.previous}


def offer(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    Claims(ledger).offer(who[0], args["id"], _hex(body.get("secret_hash"), "secret_hash", 32))
    return {"device_id": args["id"], "claimable": True}


def claim(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    owner = args.get("owner", who[0])  # the dashboard claims for the owner it logged in
    device_id = _str(body, "device_id", wire.NAME_MAX)
    return _claimed(Claims(ledger).claim(owner, device_id, _secret(body)))


def transfer(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    owner = args.get("owner", who[0])
    return _claimed(Claims(ledger).transfer(owner, args["id"], _str(body, "to", 32)))


def decommission(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    refunded = Claims(ledger).decommission(who[0], args["id"])
    return {"device_id": args["id"], "refunded": refunded, "revoked": True}


def owner_overview(
    ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]
) -> dict[str, Any]:
    return overview.owner(ledger, args.get("owner", who[0]))


def operator_overview(
    ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]
) -> dict[str, Any]:
    return overview.operator(ledger)


_ID, _OWNER = rf"(?P<id>{names.ID})", rf"(?P<owner>{names.ID})"
ROUTES: list[Route] = [
    (m, re.compile(p + r"\Z"), roles, name, h)
    for m, p, roles, name, h in (
        ("POST", rf"/v1/devices/{_ID}/claimable", ("owner",), "offer_claim", offer),
        ("POST", r"/v1/devices/claim", ("owner",), "claim_device", claim),
        ("POST", rf"/v1/devices/{_ID}/transfer", ("owner",), "transfer_device", transfer),
        ("POST", rf"/v1/devices/{_ID}/decommission", ("owner",), "decommission", decommission),
        ("GET", r"/v1/overview", ("owner",), "overview", owner_overview),
        ("GET", rf"/v1/overview/owners/{_OWNER}", ("dashboard",), "overview", owner_overview),
        ("POST", rf"/v1/overview/owners/{_OWNER}/claim", ("dashboard",), "claim_device", claim),
        (
            "POST",
            rf"/v1/overview/owners/{_OWNER}/devices/{_ID}/transfer",
            ("dashboard",),
            "transfer_device",
            transfer,
        ),
        ("GET", r"/v1/overview/operator", ("dashboard", "admin", "auditor"), "operator", operator_overview),
    )
]

"""The thin layer between HTTP and the ledger: routes, roles, and the checking of bodies.

``Router.handle(method, path, identity, body)`` returns (status, JSON-ready dict) and never
raises for bad input: every expected failure is a ``BankError`` whose code maps to its
status in ``errors.STATUS`` (the one place). Bodies follow docs/BANK_API.md.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from ecoin.common import bank_errors as errors
from ecoin.common import names
from ecoin.protocol import wire

from . import books
from .keys import Item
from .ledger import WITHDRAW_MAX, Ledger
from .store import Account

log = logging.getLogger("ecoin.bank")

BODY_MAX = 1 << 20
BATCH_MAX = 256
CSV = "text/csv"  # an answer {CSV: text} is sent as that text, not as JSON
ANY_ROLE = ("analyst", "gateway", "owner", "admin", "auditor", "dashboard")

Identity = tuple[str, str]  # (name, role) from the client certificate
Handler = Callable[[Ledger, Identity, dict[str, Any], dict[str, str]], dict[str, Any]]


# Body checks: each raises Malformed with the field's name.


def _get(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in body:
        raise errors.Malformed(f"missing field {name!r}")
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise errors.Malformed(f"{name!r} must be {what}")
    return value


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _get(body, name, int, "an integer")
    if not low <= value <= high:
        raise errors.Malformed(f"{name!r} must be {low} to {high}")
    return int(value)


def _str(body: dict[str, Any], name: str, max_len: int = 64) -> str:
    value = _get(body, name, str, "a string")
    if not 1 <= len(value) <= max_len:
        raise errors.Malformed(f"{name!r} must be 1 to {max_len} characters")
    return str(value)


def _b64(value: Any, name: str, sizes: tuple[int, ...] | None = None) -> bytes:
    if not isinstance(value, str):
        raise errors.Malformed(f"{name!r} must be a base64 string")
    try:
        # binascii's strict mode refuses what b64decode(validate=True) does (and misplaced
        # padding too) at half its cost: one call per header of a batch.
        data = binascii.a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error is one; so is a non-ASCII str
        raise errors.Malformed(f"{name!r} is not valid base64") from exc
    if sizes is not None and len(data) not in sizes:
        raise errors.Malformed(f"{name!r} must decode to {' or '.join(map(str, sizes))} bytes")
    return data


def _hex(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size:
        raise errors.Malformed(f"{name!r} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise errors.Malformed(f"{name!r} must be {2 * size} hex digits") from exc


def _list(body: dict[str, Any], name: str, high: int) -> list[Any]:
    value = _get(body, name, list, "a list")
    if not value:
        raise errors.Malformed(f"{name!r} must not be empty")
    if len(value) > high:
        raise errors.BatchTooLarge(f"{name!r} holds {len(value)} entries; at most {high}")
    return value


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def _account(a: Account) -> dict[str, Any]:
    out: dict[str, Any] = {"id": a.name, "kind": a.kind, "balance": a.balance}
    if a.kind == "analyst":
        out["services"] = list(a.services)
    return out


# Handlers.


def _item(raw: Any, i: int) -> Item:
    if not isinstance(raw, dict):
        raise errors.Malformed(f"items[{i}] must be an object")
    try:
        kid = _hex(raw.get("kid"), "kid", wire.KID_LEN)
        header = _b64(raw.get("header"), "header", wire.HEADER_LENS)
        op_id = _hex(raw.get("op_id"), "op_id", wire.OP_ID_LEN)
        service = _str(raw, "service", wire.NAME_MAX)
        digest = _hex(raw.get("digest"), "digest", 32)
        tag = _hex(raw.get("tag"), "tag", wire.TAG_LEN)
        not_after = _not_after(raw.get("not_after"))
        # The analyst states its price; the header must hold that many coins (BANK_API.md).
        price = _int(raw, "price", 1, wire.HEADER_COINS_MAX) if "price" in raw else 1
        repeat = raw.get("repeat", False)
        if not isinstance(repeat, bool):
            raise errors.Malformed("repeat must be true or false")
    except errors.Malformed as exc:
        raise errors.Malformed(f"items[{i}]: {exc.message}") from exc
    return Item(kid, header, op_id, service, digest, tag, not_after, price, repeat)


def _not_after(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 2**40:
        raise errors.Malformed("not_after must be unix seconds")
    return float(v)


def redeem(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    raw = _list(body, "items", BATCH_MAX)
    items = [_item(r, i) for i, r in enumerate(raw)]
    results = ledger.redeem(who[0], items)
    for r in results:
        if r["status"] == "ok":
            r.update(k_enc=b64(r["k_enc"]), k_mac=b64(r["k_mac"]), iv=b64(r["iv"]))
    return {"results": results}


def topup(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    """A gateway relays frames it cannot check: an unknown device gets the same answer as
    a frame that does not authenticate, so a gateway cannot probe which device ids exist."""
    frame = _b64(body.get("frame"), "frame")
    try:
        return {"frame": b64(ledger.topup(frame))}
    except errors.UnknownDevice:
        raise errors.Malformed("the top-up request does not authenticate") from None


def create_account(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    kind = _str(body, "kind")
    services = body.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
        raise errors.Malformed("'services' must be a list of strings")
    return _account(ledger.create_account(_str(body, "id", 32), kind, services))


def fund(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    amount = _int(body, "amount", 1, 2**53 - 1)
    request_id = _str(body, "request_id") if "request_id" in body else None
    a = ledger.fund(args["id"], amount, request_id)
    return {"id": a.name, "balance": a.balance}


def accounts(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return {"accounts": [_account(a) for a in ledger.accounts()]}


def services(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return {"services": ledger.services()}


def balance(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    a = ledger.balance(who[0])
    return {"id": a.name, "balance": a.balance}


def register_device(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    device_id = _str(body, "device_id", wire.NAME_MAX)
    key = _b64(body.get("device_key"), "device_key", (32,))
    ledger.register_device(who[0], device_id, key)
    return {"device_id": device_id, "owner": who[0]}


def withdraw(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    count = _int(body, "count", 1, WITHDRAW_MAX)
    minted = ledger.withdraw(who[0], args["id"], count, _str(body, "request_id"))
    kid, n, e = ledger.opener.keys.public(minted.kid)
    return {
        "coins": [b64(c) for c in minted.coins],
        "expires": minted.expires,
        "kid": kid.hex(),
        "public_key": {"n": format(n, "x"), "e": e},
    }


def claim(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    device_id = _str(body, "device_id", wire.NAME_MAX)
    coins = [_b64(c, f"coins[{i}]", (wire.COIN_LEN,)) for i, c in enumerate(_list(body, "coins", 10_000))]
    refund = body.get("refund", True)
    if not isinstance(refund, bool):
        raise errors.Malformed("'refund' must be true or false")
    return {"results": ledger.claim(who[0], device_id, coins, refund)}


def put_policy(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    device = args.get("id")  # None: the owner's default
    return {"device": device, "policy": ledger.books.set_policy(who[0], device, body)}


def delete_policy(
    ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]
) -> dict[str, Any]:
    device = args.get("id")
    return {"device": device, "policy": ledger.books.set_policy(who[0], device, None)}


def policies(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return ledger.books.policies(who[0])


def statement(ledger: Ledger, who: Identity, body: dict[str, Any], args: dict[str, str]) -> dict[str, Any]:
    """The caller's own statement (owner or analyst), or any account's for admin and auditor."""
    name = args.get("id", who[0])
    first, last = (books.day_number(args[k], k[1:]) if k in args else None for k in ("?from", "?to"))
    kind = ledger.balance(name).kind if "id" in args else who[1]
    make = ledger.books.owner_statement if kind == "owner" else ledger.books.analyst_statement
    answer = make(name, first, last)
    fmt = args.get("?format", "json")
    if fmt not in ("json", "csv"):
        raise errors.Malformed("'format' must be json or csv")
    return {CSV: books.to_csv(answer)} if fmt == "csv" else answer


def healthz(ledger: Ledger, who: Identity, body: dict[str, Any], _: dict[str, str]) -> dict[str, Any]:
    return {"ok": True}


ROUTES: list[tuple[str, re.Pattern[str], tuple[str, ...], str, Handler]] = [
    (m, re.compile(p + r"\Z"), roles, name, h)
    for m, p, roles, name, h in (
        ("POST", r"/v1/redeem", ("analyst",), "redeem", redeem),
        ("POST", r"/v1/topup", ("gateway",), "topup", topup),
        ("POST", r"/v1/accounts", ("admin",), "create_account", create_account),
        ("POST", rf"/v1/accounts/(?P<id>{names.ID})/fund", ("admin",), "fund", fund),
        ("GET", r"/v1/accounts", ("admin", "auditor"), "accounts", accounts),
        ("GET", r"/v1/balance", ("owner", "analyst"), "balance", balance),
        ("GET", r"/v1/services", ("owner", "admin", "auditor"), "services", services),
        ("POST", r"/v1/devices", ("owner",), "register_device", register_device),
        ("POST", rf"/v1/devices/(?P<id>{names.ID})/withdraw", ("owner",), "withdraw", withdraw),
        ("POST", r"/v1/claims", ("owner",), "claim", claim),
        ("GET", r"/v1/policies", ("owner",), "policies", policies),
        ("PUT", r"/v1/policies/default", ("owner",), "put_policy", put_policy),
        ("DELETE", r"/v1/policies/default", ("owner",), "delete_policy", delete_policy),
        ("PUT", rf"/v1/policies/devices/(?P<id>{names.ID})", ("owner",), "put_policy", put_policy),
        ("DELETE", rf"/v1/policies/devices/(?P<id>{names.ID})", ("owner",), "delete_policy", delete_policy),
        ("GET", r"/v1/statement", ("owner", "analyst"), "statement", statement),
        ("GET", rf"/v1/statements/(?P<id>{names.ID})", ("admin", "auditor"), "statement", statement),
        ("GET", r"/healthz", ANY_ROLE, "healthz", healthz),
    )
]


Route = tuple[str, re.Pattern[str], tuple[str, ...], str, Handler]


def route(
    method: str, path: str, routes: list[Route] = ROUTES
) -> tuple[str, tuple[str, ...], Handler, dict[str, str]]:
    """The route and its arguments: the path's named groups, and the query's parameters
    as ``?name`` (the last of repeated ones)."""
    path, _, query = path.partition("?")
    for m, pattern, roles, name, handler in routes:
        match = pattern.match(path)
        if match and m == method:
            try:
                args = {"?" + k: v for k, v in urllib.parse.parse_qsl(query, max_num_fields=16)}
            except ValueError as exc:
                raise errors.Malformed(f"bad query: {exc}") from exc
            return name, roles, handler, {**args, **match.groupdict()}
    raise errors.NotFound(f"no {method} {path}")


def parse(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise errors.Malformed(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.Malformed("the body must be a JSON object")
    return body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def error_body(exc: errors.BankError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}


class Router:
    """``extra`` routes come from other modules of the bank (``claims_api``), which use this
    module's body checks and so cannot be imported by it."""

    def __init__(self, ledger: Ledger, extra: list[Route] | None = None) -> None:
        self.ledger = ledger
        self.routes = ROUTES + (extra or [])

    def handle(self, method: str, path: str, who: Identity, raw: bytes) -> tuple[str, int, dict[str, Any]]:
        """(route name, status, body). Expected failures become error bodies; anything else
        is logged with its traceback (in the log only) and answered as a bare 500."""
        name = "unknown"
        try:
            name, roles, handler, args = route(method, path, self.routes)
            if who[1] not in roles:
                raise errors.Forbidden(f"{who[1]} {who[0]} may not call {name}")
            return name, 200, handler(self.ledger, who, parse(raw), args)
        except errors.BankError as exc:
            status = errors.STATUS.get(exc.code, 500)
            if status >= 500:
                log.warning("request_failed", extra={"route": name, "code": exc.code, "reason": exc.message})
            if exc.code not in errors.STATUS:  # an internal failure: its details stay in the log
                exc = errors.BankError("internal error; see the bank's log")
            elif status >= 500:  # the database's own words (host, user) stay in the log too
                exc = type(exc)("the bank's database is unavailable; nothing was changed, retry later")
            return name, status, error_body(exc)
        except Exception:
            log.exception("request_crashed", extra={"route": name})
            return name, 500, error_body(errors.BankError("internal error; see the bank's log"))

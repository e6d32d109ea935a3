"""The dashboard's web application (aiohttp, Jinja2 templates): pages, logins, the two
actions (claim, transfer), and the live fragments a page's script refreshes.

    GET  /login, POST /login, POST /logout
    GET  /owner            an owner's devices, charts, refunds, claims   (role owner)
    GET  /owner/live       the same figures as an HTML fragment (live refresh)
    GET  /owner/devices/ID one device of theirs; another's is 404
    POST /owner/claim      claim a device by its URI
    POST /owner/devices/ID/transfer
    GET  /operator, /operator/live                                       (role operator)
    GET  /healthz

Every page is complete HTML with its tables and SVG charts, so nothing needs JavaScript;
``static/live.js`` only swaps in fresh fragments. An owner sees only what the bank's owner
overview returns for their own name; the bank refuses the rest (404), and so does this.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from ecoin.common import bank_errors as errors
from ecoin.common import names
from ecoin.common.claim_uri import ClaimUri, ClaimUriError
from ecoin.common.config import ConfigError

from . import charts, users
from .sessions import COOKIE, Session, Signer
from .settings import DashboardSettings
from .source import Source
from .throttle import LoginThrottle

log = logging.getLogger("ecoin.dashboard")

SETTINGS = web.AppKey("settings", DashboardSettings)
SOURCE = web.AppKey("source", Source)
SIGNER = web.AppKey("signer", Signer)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
HTTP = web.AppKey("http", aiohttp.ClientSession)
THROTTLE = web.AppKey("throttle", LoginThrottle)


def _when(at: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "never"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ecoin.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    return env


def _done(request: web.Request) -> str:
    """The note after a claim or transfer, from fixed words only (a link cannot make the
    page say anything else)."""
    what, device = request.query.get("done", ""), request.query.get("device", "")
    if what in ("claim", "transfer") and names.is_id(device):
        return f"{what} done: {device}"
    return ""


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    app = request.app
    cookie = request.cookies.get(COOKIE)
    context.setdefault("session", None)
    context.setdefault("message", _done(request))
    context["csrf"] = app[SIGNER].csrf(cookie) if cookie else ""
    context["refresh_ms"] = int(app[SETTINGS].refresh_s * 1000)
    html = app[TEMPLATES].get_template(name).render(**context)
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def session_of(request: web.Request, role: str) -> Session:
    """The logged-in session of ``role``; else to the login page (403 for the other role)."""
    session = request.app[SIGNER].read(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPSeeOther("/login")
    if session.role != role:
        raise web.HTTPForbidden(text=f"{session.user} is not an {role}")
    return session


async def _form(request: web.Request, session: Session) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.post()).items()}
    if not request.app[SIGNER].csrf_ok(request.cookies.get(COOKIE), form.get("csrf")):
        raise web.HTTPForbidden(text="the form's token does not match this session: reload the page")
    return form


# Login.


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    throttle = request.app[THROTTLE]
    wait = throttle.wait_s(name)
    if wait:
        log.warning("login_throttled", extra={"user": name[:32]})
        message = "too many failed logins: try again later"
        response = render(request, "login.html", status=429, message=message)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    try:  # read at each login, so `user add` needs no restart
        known = users.load(request.app[SETTINGS].users)
    except ConfigError as exc:  # broken since the start: the operator's to fix, nobody logs in
        log.error("users_file_unreadable", extra={"error": str(exc)[:300]})
        return render(request, "login.html", status=503, message="logins are unavailable: see the log")
    user = known.get(name)
    # A missing user costs the same scrypt as a wrong password: no probing of names.
    record = user.password if user else users.hash_password("x", b"0" * 16)
    if not users.check_password(record, password) or user is None:
        throttle.failed(name)
        log.warning("login_refused", extra={"user": name[:32]})
        return render(request, "login.html", status=401, message="wrong user name or password")
    throttle.succeeded(name)
    log.info("login", extra={"user": user.name, "role": user.role})
    response = web.HTTPSeeOther(f"/{user.role}")
    response.set_cookie(
        COOKIE,
        request.app[SIGNER].issue(user.name, user.role),
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].secure_cookies,
        max_age=request.app[SIGNER].lifetime,
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def index(request: web.Request) -> web.Response:
    session = request.app[SIGNER].read(request.cookies.get(COOKIE))
    raise web.HTTPSeeOther(f"/{session.role}" if session else "/login")


def _page(
    role: str, template: str, view: Callable[[web.Request, Session], Awaitable[dict[str, Any]]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of a page (or its live fragment) drawn from ``view`` for ``role``."""

    async def handler(request: web.Request) -> web.Response:
        session = session_of(request, role)
        return render(request, template, **await view(request, session))

    return handler


# Owner.


async def _owner_view(request: web.Request, session: Session) -> dict[str, Any]:
    data = await request.app[SOURCE].owner(session.user)
    series = {d["id"]: d["timeline"] for d in data["devices"] if any(d["timeline"])}
    spend = {f"{s['analyst']} ({', '.join(s['services'])})": s["coins"] for s in data["spend"]}
    return {
        "session": session,
        "data": data,
        "ops_chart": charts.timeline("Operations per minute, last hour (UTC)", data, series),
        "spend_chart": charts.bars("Spend by service (coins)", spend, "coins"),
    }


owner_page = _page("owner", "owner.html", _owner_view)
owner_live = _page("owner", "owner_live.html", _owner_view)


async def device_page(request: web.Request) -> web.Response:
    session = session_of(request, "owner")
    device_id = request.match_info["id"]
    data = await request.app[SOURCE].owner(session.user)
    device = next((d for d in data["devices"] if d["id"] == device_id), None)
    if device is None or not names.is_id(device_id):  # another owner's device is not found
        raise web.HTTPNotFound(text=f"{session.user} has no device {device_id[:32]}")
    chart = charts.timeline(
        f"{device_id}: operations per minute",
        data,
        {device_id: device["timeline"]},
    )
    return render(request, "device.html", session=session, device=device, chart=chart)


async def _action(
    request: web.Request, what: str, call: Callable[[Session, dict[str, str]], Awaitable[dict[str, Any]]]
) -> web.Response:
    """An owner's form (claim, transfer): the session's CSRF token checked, then ``call``
    asks the bank and we redirect with a note. A form that does not parse is a 400, the
    bank's refusal is shown with its own status (502 for its own failures)."""
    session = session_of(request, "owner")
    form = await _form(request, session)
    try:
        done = await call(session, form)
    except ClaimUriError as exc:
        status, message = 400, str(exc)
    except errors.BankError as exc:
        log.info("action_refused", extra={"user": session.user, "action": what, "code": exc.code})
        status, message = (exc.status if 400 <= exc.status < 500 else 502), exc.message
    else:
        raise web.HTTPSeeOther(f"/owner?done={what}&device={done['device_id']}")
    view = await _owner_view(request, session)
    return render(request, "owner.html", status=status, message=f"{what} refused: {message}", **view)


async def claim(request: web.Request) -> web.Response:
    async def call(session: Session, form: dict[str, str]) -> dict[str, Any]:
        uri = ClaimUri.parse(form.get("uri", ""))
        return await request.app[SOURCE].claim(session.user, uri.device_id, uri.secret)

    return await _action(request, "claim", call)


async def transfer(request: web.Request) -> web.Response:
    async def call(session: Session, form: dict[str, str]) -> dict[str, Any]:
        device_id, to = request.match_info["id"], form.get("to", "")
        if not (names.is_id(device_id) and names.is_id(to)):
            raise web.HTTPNotFound(text="no such device or owner")
        return await request.app[SOURCE].transfer(session.user, device_id, to)

    return await _action(request, "transfer", call)


# Operator.


async def _operator_view(request: web.Request, session: Session) -> dict[str, Any]:
    data = await request.app[SOURCE].operator()
    health = await request.app[SOURCE].health(request.app[HTTP])
    throughput = {"redeemed": data["redeemed_per_min"], "minted": data["minted_per_min"]}
    earned = {a["id"]: a["earned"] for a in data["analysts"]}
    return {
        "session": session,
        "data": data,
        "health": health,
        "throughput_chart": charts.timeline(
            "Bank throughput: coins per minute (UTC)", data, throughput, stacked=False
        ),
        "earnings_chart": charts.bars("Analysts' earnings (coins)", earned, "coins"),
    }


operator_page = _page("operator", "operator.html", _operator_view)
operator_live = _page("operator", "operator_live.html", _operator_view)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@web.middleware
async def bank_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A bank that cannot be reached is a 502 page naming it, not a traceback."""
    try:
        return await handler(request)
    except errors.BankError as exc:
        log.warning("bank_failed", extra={"path": request.path, "code": exc.code})
        status = exc.status if exc.status in (403, 404) else 502
        return web.Response(status=status, text=f"the bank answered: {exc.message}")


async def _http(app: web.Application) -> Any:
    app[HTTP] = aiohttp.ClientSession()
    yield
    await app[HTTP].close()
    app[SOURCE].close()


def make_app(settings: DashboardSettings, signer: Signer, source: Source | None = None) -> web.Application:
    app = web.Application(middlewares=[bank_errors], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[SOURCE] = source or Source(settings)
    app[SIGNER] = signer
    app[TEMPLATES] = templates()
    app[THROTTLE] = LoginThrottle(settings.login_failures, settings.login_window_s)
    app.cleanup_ctx.append(_http)
    static = Path(str(importlib.resources.files("ecoin.dashboard") / "static"))
    app.add_routes(
        [
            web.get("/", index),
            web.get("/login", login_page),
            web.post("/login", login),
            web.post("/logout", logout),
            web.get("/owner", owner_page),
            web.get("/owner/live", owner_live),
            web.get("/owner/devices/{id}", device_page),
            web.post("/owner/claim", claim),
            web.post("/owner/devices/{id}/transfer", transfer),
            web.get("/operator", operator_page),
            web.get("/operator/live", operator_live),
            web.get("/healthz", healthz),
            web.static("/static", static),
        ]
    )
    return app

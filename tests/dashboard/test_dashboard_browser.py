"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver), against a
real bank process over mutual TLS: an owner sees exactly their devices with the right coin
counts after a few operations, claims a new device by its URI, sees the charts render and
refresh live; another owner can neither see nor claim them (404, 409, 403); a claim URI
used twice is refused; the transfer made in the browser and a decommissioning are in the
audit chain, and the audit passes. One browser session for the whole module."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from ecoin.common.claim_uri import ClaimUri
from ecoin.testing.bank import BankProcess, operation_item
from ecoin.testing.dashboard import Browser, DashboardProcess
from ecoin.tools import pki as pki_tool


@dataclass
class World:
    bank: BankProcess
    dash: DashboardProcess
    browser: Browser
    coins: dict[str, list[bytes]] = field(default_factory=dict)
    uri: str = ""


def redeem(bank: BankProcess, pki_dir: Path, coins: list[bytes]) -> None:
    """Spends coins as analyst alice would, for real operations sealed as a device seals them."""
    from ecoin.common.bank_client import RedeemItem
    from ecoin.common.keyfiles import load_coin_public

    kid, public = load_coin_public(pki_dir)
    with bank.client("analyst", "alice") as alice:
        items = [RedeemItem(*operation_item(public, kid, c, "average")) for c in coins]
        assert all(r.ok for r in alice.redeem(items))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dashboard")
    pki_dir = root / "pki"
    pki_tool.init(pki_dir)
    for role, name in (("owner", "olive"), ("owner", "oscar"), ("analyst", "alice")):
        pki_tool.issue(pki_dir, role, name)
    with BankProcess(root / "bank", pki_dir, workers=0) as bank:
        admin = bank.admin
        for owner in ("olive", "oscar"):
            admin.create_account(owner, "owner")
            admin.fund(owner, 100)
        admin.create_account("alice", "analyst", ["average"])
        w = World(bank, None, None)  # type: ignore[arg-type]
        with bank.client("owner", "olive") as olive, bank.client("owner", "oscar") as oscar:
            for client, device, n in ((olive, "dev-a", 10), (olive, "dev-b", 5), (oscar, "dev-c", 4)):
                client.register_device(device, hashlib.sha256(device.encode()).digest())
                w.coins[device] = client.withdraw(device, n, request_id=f"{device}-1").coins
            oscar.register_device("dev-new", bytes(32))  # the installer provisions, olive claims
            w.coins["dev-new"] = oscar.withdraw("dev-new", 6, request_id="new-1").coins
            from ecoin.tools.provisioning import sticker

            w.uri = str(sticker.offer(oscar, "dev-new", bank.url))
            olive.claim("dev-b", w.coins["dev-b"][:1])  # one coin in doubt, refunded
        redeem(bank, pki_dir, w.coins["dev-a"][:3])
        users = {"olive": "owner", "oscar": "owner", "ops": "operator"}
        health = {
            "bank": f"http://127.0.0.1:{bank.metrics_port}/healthz",
            "gateway gw1": "http://127.0.0.1:9/healthz",
        }
        with DashboardProcess(root / "dash", pki_dir, bank.url, users, health) as dash, Browser() as browser:
            w.dash, w.browser = dash, browser
            yield w


def rows(w: World) -> dict[str, int]:
    """{device: coins left} as the browser shows them (read in one script: live.js may swap
    the table in at any moment)."""
    script = """return Object.fromEntries([...document.querySelectorAll('#devices tbody tr[data-device]')]
        .map(tr => [tr.dataset.device, parseInt(tr.querySelector('.coins-left').textContent, 10)]));"""
    return dict(w.browser.driver.execute_script(script))


def text(w: World, selector: str) -> str:
    """The text of the first element matching ``selector`` ('' if there is none)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';"
    return str(w.browser.driver.execute_script(script, selector))


def chart(w: World, selector: str) -> dict[str, float]:
    """The laid-out size of a chart's SVG and how many of its bars have a height."""
    script = """const svg = document.querySelector(arguments[0] + ' svg'); if (!svg) return null;
        const r = svg.getBoundingClientRect();
        const bars = [...svg.querySelectorAll('.series rect')].filter(b => b.getBBox().height > 0).length;
        return {width: r.width, height: r.height, bars: bars};"""
    return dict(w.browser.driver.execute_script(script, selector) or {})


def login(w: World, user: str) -> None:
    w.browser.login(w.dash.url, user, w.dash.passwords[user])


def http(w: World, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
    """A request with the browser's session cookie, outside the browser (no JavaScript)."""
    cookie = w.browser.driver.get_cookie("ecoin_session")
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(w.dash.url + path, data=data, method=method)
    req.add_header("Cookie", f"ecoin_session={cookie['value']}" if cookie else "")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - our own loopback server
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def csrf(w: World) -> str:
    return str(w.browser.driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value"))


def test_an_owner_sees_exactly_their_devices_with_their_coins(world: World):
    login(world, "olive")
    assert world.browser.driver.current_url.endswith("/owner")
    assert rows(world) == {"dev-a": 7, "dev-b": 4}
    used, refunded = (
        text(world, "tr[data-device=dev-a] .used"),
        text(world, "tr[data-device=dev-b] .refunded"),
    )
    assert (used, refunded) == ("3", "1")
    status, html = http(world, "GET", "/owner")  # the tables are complete without JavaScript
    assert status == 200 and 'data-device="dev-a"' in html and "dev-c" not in html


def test_charts_render_and_the_figures_refresh_live(world: World):
    ops = chart(world, "#ops-chart")
    assert ops["width"] > 300 and ops["height"] > 100 and ops["bars"] >= 1
    assert chart(world, "#spend-chart")["bars"] == 1  # alice (average)
    redeem(world.bank, world.bank.pki, world.coins["dev-a"][3:5])  # two more operations
    world.browser.wait(lambda: rows(world).get("dev-a") == 5, timeout=20)
    assert world.browser.driver.find_element(By.ID, "live").get_attribute("data-refreshed")  # live.js


def test_an_owner_claims_a_device_by_its_uri_once(world: World):
    d = world.browser.driver
    d.find_element(By.ID, "uri").send_keys(world.uri)
    d.find_element(By.ID, "claim").click()
    world.browser.wait(lambda: "dev-new" in rows(world))
    assert rows(world) == {"dev-a": 5, "dev-b": 4, "dev-new": 6}
    assert "claim done" in text(world, "#message")
    claims = text(world, "#claims")
    assert "dev-new" in claims and "oscar" in claims
    d.find_element(By.ID, "uri").send_keys(world.uri)  # the same URI again
    d.find_element(By.ID, "claim").click()
    world.browser.wait(lambda: "refused" in text(world, "#message"))
    assert "used before" in text(world, "#message")
    status, _ = http(world, "POST", "/owner/claim", {"csrf": csrf(world), "uri": world.uri})
    assert status == 409
    status, body = http(world, "POST", "/owner/claim", {"csrf": csrf(world), "uri": "ecoin:nonsense"})
    assert status == 400 and "claim refused" in body  # no bank call for what is not a claim URI


def test_an_owner_transfers_a_device_in_the_browser(world: World):
    d = world.browser.driver
    d.find_element(By.ID, "to").send_keys("oscar")
    d.find_element(By.CSS_SELECTOR, "button[value=dev-b]").click()
    world.browser.wait(lambda: "dev-b" not in rows(world))
    assert rows(world) == {"dev-a": 5, "dev-new": 6}


def test_another_owner_can_neither_see_nor_claim_them(world: World):
    login(world, "oscar")
    assert rows(world) == {"dev-b": 4, "dev-c": 4}  # dev-b came with its coins
    b = world.browser
    assert b.status("/owner/devices/dev-c") == 200
    assert b.status("/owner/devices/dev-a") == 404
    assert b.status("/owner/devices/dev-new") == 404
    assert b.status("/operator") == 403
    token = csrf(world)
    assert http(world, "POST", "/owner/devices/dev-a/transfer", {"csrf": token, "to": "oscar"})[0] == 404
    assert http(world, "POST", "/owner/claim", {"csrf": token, "uri": world.uri})[0] == 409
    forged = ClaimUri("dev-a", world.bank.url, "A" * 32)
    assert http(world, "POST", "/owner/claim", {"csrf": token, "uri": str(forged)})[0] == 404
    assert http(world, "POST", "/owner/claim", {"csrf": "nope", "uri": world.uri})[0] == 403
    world.browser.driver.delete_all_cookies()
    status, html = http(world, "GET", "/owner")  # no session: the login page
    assert status == 200 and 'id="password"' in html


def test_the_operator_sees_services_status_and_throughput(world: World):
    login(world, "ops")
    d = world.browser.driver
    assert "alice" in d.find_element(By.ID, "services").text
    health = {
        tr.find_element(By.TAG_NAME, "th").text: tr.get_attribute("class")
        for tr in d.find_elements(By.CSS_SELECTOR, "#health tbody tr")
    }
    assert health == {"bank": "up", "gateway gw1": "down"}
    chart = d.find_element(By.CSS_SELECTOR, "#throughput-chart svg")
    assert chart.size["width"] > 300
    assert world.browser.status("/owner") == 403


def test_decommissioning_and_the_audit(world: World):
    with world.bank.client("owner", "olive") as olive:
        done = olive.decommission("dev-a")
    assert done == {"device_id": "dev-a", "refunded": 5, "revoked": True}
    audit = world.bank.cli("audit")
    assert "audit passed" in audit.stdout
    figures = dict(line.split() for line in audit.stdout.splitlines() if len(line.split()) == 2)
    assert (figures["claims"], figures["transfers"], figures["decommissions"]) == ("1", "1", "1")
    login(world, "olive")
    assert rows(world) == {"dev-new": 6}

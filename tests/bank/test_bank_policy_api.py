"""Policies and statements through the real bank over mutual TLS (SQLite and PostgreSQL),
and through ``ecoin-bank`` and ``ecoin-provision``: each rule refuses a real redemption
with its code, nothing is spent, a claim refunds the coin; bad policies get a 4xx."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from ecoin.common import bank_errors as errors
from ecoin.common.bank_client import RedeemItem
from ecoin.testing.bank import BankProcess, operation_item

from .helpers import populate
from .test_bank_api import raw_call


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def bank(request, pki, tmp_path_factory):
    """One bank per backend for the module; each test uses a device of its own."""
    db = None
    if request.param == "postgres":
        base, _ = request.getfixturevalue("pg_server")
        name = f"bank_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        db = base.rsplit("/", 1)[0] + "/" + name
    with BankProcess(tmp_path_factory.mktemp("bank"), pki, db=db, workers=0) as b:
        populate(b, 10_000)
        yield b
    if db is not None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _device(bank, olive) -> str:
    device = f"d{uuid.uuid4().hex[:12]}"
    olive.register_device(device, os.urandom(32))
    return device


def _items(w, coins, service="average"):
    return [RedeemItem(*operation_item(w.public_key, w.kid, c, service)) for c in coins]


@pytest.mark.slow
def test_each_rule_refuses_a_real_redemption_and_the_claim_refunds(bank):
    now = int(time.time())
    rules = [
        ({"services": ["stats"]}, "policy_service"),
        ({"analysts": ["bob"]}, "policy_analyst"),
        ({"not_before": now + 3600}, "policy_window"),
        ({"not_after": now - 3600}, "policy_window"),
        ({"daily_cap": 1}, "policy_daily_cap"),
        ({"monthly_cap": 1}, "policy_monthly_cap"),
    ]
    with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
        dev = _device(bank, olive)
        assert olive.set_policy({"daily_cap": 1}, dev) == {"daily_cap": 1}
        w = olive.withdraw(dev, 2 + len(rules))
        earned = alice.balance()
        assert alice.redeem(_items(w, w.coins[:1]))[0].ok  # the one coin today's cap allows
        for (policy, code), coin in zip(rules, w.coins[1:], strict=False):
            olive.set_policy(policy, dev)
            balances = (olive.balance(), alice.balance())
            [r] = alice.redeem(_items(w, [coin]))
            assert (r.ok, r.code) == (False, code), policy
            assert (olive.balance(), alice.balance()) == balances
            [c] = olive.claim(dev, [coin])
            assert c["state"] == "refunded"
        olive.set_policy(None, dev)
        assert alice.redeem(_items(w, w.coins[-1:]))[0].ok
        assert dev not in olive.policies()["devices"]
        assert alice.balance() == earned + 2  # the first coin and the last
    assert "audit passed" in bank.cli("audit").stdout


def test_bad_policies_and_roles_get_a_clear_4xx(bank):
    status, body = raw_call(bank, "PUT", "/v1/policies/default", b'{"daily_cap": "ten"}', "owner", "olive")
    assert (status, body["error"]["code"]) == (400, "malformed") and "daily_cap" in body["error"]["message"]
    status, body = raw_call(bank, "PUT", "/v1/policies/default", b"[1]", "owner", "olive")
    assert (status, body["error"]["code"]) == (400, "malformed")
    status, body = raw_call(bank, "PUT", "/v1/policies/devices/dev9", b"{}", "owner", "olive")
    assert (status, body["error"]["code"]) == (404, "unknown_device")
    status, body = raw_call(bank, "PUT", "/v1/policies/default", b"{}", "analyst", "alice")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = raw_call(bank, "GET", "/v1/statement?from=yesterday", None, "owner", "olive")
    assert (status, body["error"]["code"]) == (400, "malformed") and "YYYY-MM-DD" in body["error"]["message"]
    status, body = raw_call(bank, "GET", "/v1/statement?format=pdf", None, "owner", "olive")
    assert (status, body["error"]["code"]) == (400, "malformed")
    with bank.client("owner", "olive") as olive:
        with pytest.raises(errors.Malformed, match="unknown policy field"):
            olive.set_policy({"caps": 1})
        assert olive.policies()["default"] is None  # nothing was set


def test_statements_over_the_api_sum_to_the_balances(bank):
    with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
        dev = _device(bank, olive)
        before = olive.statement()
        w = olive.withdraw(dev, 5)
        assert all(r.ok for r in alice.redeem(_items(w, w.coins[:3])))
        olive.claim(dev, w.coins[3:4])
        s = olive.statement()
        assert (s["spent_by_device"][dev], s["outstanding_by_device"][dev]) == (3, 1)
        deltas = [s[k] - before[k] for k in ("bought", "spent", "refunded", "outstanding")]
        assert deltas == [5, 3, 1, 1]
        assert s["balance"] == olive.balance() == s["funded"] - s["bought"] + s["refunded"] + s["expired"]
        a = alice.statement()
        assert a["earned"] == alice.balance() == sum(a["earned_by_service"].values())
        rows = list(csv.reader(io.StringIO(olive.statement(fmt="csv"))))
        assert ["spent_by_device", dev, "3"] in rows
        assert bank.admin.statement(account="alice")["earned"] == a["earned"]
    assert "audit passed" in bank.cli("audit").stdout


def _provision(bank, *args):
    cmd = [sys.executable, "-m", "ecoin.tools.provision", *args, "--bank", bank.url]
    cmd += ["--pki", str(bank.pki), "--owner", "olive"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("bank", ["sqlite"], indirect=True)
def test_the_command_lines_set_policies_and_print_statements(bank):
    done = _provision(bank, "policy", "set", "--device", "dev1", "--service", "stats", "--daily-cap", "5")
    assert done.returncode == 0, done.stderr
    assert 'device dev1 policy: {"daily_cap": 5, "services": ["stats"]}' in done.stdout
    shown = json.loads(_provision(bank, "policy", "show").stdout)
    assert shown["devices"]["dev1"] == {"daily_cap": 5, "services": ["stats"]}
    bad = _provision(bank, "policy", "set", "--json", '{"daily_cap": -1}')
    assert bad.returncode == 1 and "daily_cap" in bad.stderr and "Traceback" not in bad.stderr
    statement = _provision(bank, "statement", "--format", "csv")
    assert statement.returncode == 0 and statement.stdout.startswith("section,key,coins\n")

    bank.cli("policy", "set", "olive", "--not-after", "2030-01-01")
    assert json.loads(bank.cli("policy", "show", "olive").stdout)["default"] == {"not_after": 1893456000}
    bank.cli("policy", "clear", "olive", "--device", "dev1")
    bank.cli("policy", "clear", "olive")
    assert json.loads(bank.cli("policy", "show", "olive").stdout) == {"default": None, "devices": {}}
    st = json.loads(bank.cli("statement", "alice", "--from", "2020-01-01", "--to", "2020-12-31").stdout)
    assert st["analyst"] == "alice" and st["earned"] == 0 and st["earned_by_day"] == []
    bad = bank.cli("policy", "set", "olive", "--daily-cap", "-3", check=False)
    assert bad.returncode == 1 and "daily_cap" in bad.stderr and "Traceback" not in bad.stderr
    assert "audit passed" in bank.cli("audit").stdout

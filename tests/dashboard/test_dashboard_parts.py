"""The dashboard's parts without a browser: signed sessions (an altered or expired cookie is
no session), CSRF tokens bound to their session, scrypt passwords, the users file and the
configuration (bad keys exit 2, naming them), the charts (SVG with no script), and the
throttle on failed logins (over real HTTP)."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ecoin.common.config import ConfigError
from ecoin.dashboard import charts, settings, users
from ecoin.dashboard.app import THROTTLE, make_app
from ecoin.dashboard.sessions import Signer, load_key
from ecoin.testing.servers import free_port
from ecoin.tools import pki as pki_tool


def test_sessions_are_signed_expire_and_bind_their_forms(tmp_path):
    key = load_key(tmp_path / "session.key")
    assert load_key(tmp_path / "session.key") == key and len(key) == 32
    assert stat.S_IMODE((tmp_path / "session.key").stat().st_mode) == 0o600
    signer = Signer(key, hours=1)
    cookie = signer.issue("olive", "owner")
    assert signer.read(cookie).user == "olive"  # type: ignore[union-attr]
    payload, mac = cookie.split(".")
    forged = Signer(key, 1).issue("oscar", "owner").split(".")[0] + "." + mac
    assert signer.read(forged) is None and signer.read(payload) is None and signer.read(None) is None
    assert Signer(bytes(32), 1).read(cookie) is None  # another key
    assert Signer(key, hours=-1).read(Signer(key, hours=-1).issue("olive", "owner")) is None
    token = signer.csrf(cookie)
    assert signer.csrf_ok(cookie, token)
    assert not signer.csrf_ok(Signer(key, 1).issue("olive", "owner") + "x", token)
    assert not signer.csrf_ok(cookie, None) and not signer.csrf_ok(None, token)


def test_passwords_and_the_users_file(tmp_path):
    record = users.hash_password("correct horse", n=1024)
    assert users.check_password(record, "correct horse")
    assert not users.check_password(record, "correct hors")
    assert not users.check_password("garbage", "x") and not users.check_password("md5$1$2$3$4$5", "x")
    path = tmp_path / "users.toml"
    users.add(path, "olive", "owner", "long enough")
    users.add(path, "ops", "operator", "also long enough")
    loaded = users.load(path)
    assert {u.name: u.role for u in loaded.values()} == {"olive": "owner", "ops": "operator"}
    assert "long enough" not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    for bad in (("bad name", "owner", "long enough"), ("x", "admin", "long enough"), ("x", "owner", "short")):
        with pytest.raises(ConfigError):
            users.add(path, *bad)
    path.write_text('[users.eve]\nrole = "root"\npassword = "x"\n')
    with pytest.raises(ConfigError, match="users.eve"):
        users.load(path)


def test_configuration_errors_name_the_key_and_exit_2(tmp_path):
    cfg = tmp_path / "dashboard.toml"
    cfg.write_text(
        '[dashboard]\nport = 8081\nusers = "u.toml"\n[dashboard.health]\n"bank" = "http://x/healthz"\n'
    )
    s = settings.load(cfg)
    assert s.port == 8081 and s.users == str(tmp_path / "u.toml") and s.health == {"bank": "http://x/healthz"}
    for text, key in (
        ("[dashboard]\nprot = 1\n", "prot"),
        ('[dashboard]\nbank = "http://bank"\n', "dashboard.bank"),
        ('[dashboard]\nbank = "https://[::1"\n', "dashboard.bank: bank url must be https://host:port"),
        ("[dashboard]\nrefresh_s = 0\n", "refresh_s"),
        ('[dashboard]\n[dashboard.health]\nx = "ftp://a"\n', "health.x"),
        ("[bank]\n", "no [dashboard] table"),
    ):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(key)):
            settings.load(cfg)
        done = subprocess.run(
            [sys.executable, "-m", "ecoin.dashboard.cli", "-c", str(cfg), "user", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and key in done.stderr and "Traceback" not in done.stderr


def test_charts_are_plain_svg():
    span = {"start": int(time.time()) - 3540, "bucket_s": 60}
    svg = charts.timeline("ops", span, {"dev-1": [0] * 59 + [4]})
    assert svg.startswith("<svg") and "<script" not in svg and "dev-1" in svg
    assert "<script" not in charts.bars("spend", {"alice (average)": 3}, "coins")
    assert "<svg" in charts.timeline("empty", span, {})


def test_failed_logins_per_name_get_429_until_the_window_passes(tmp_path):
    pki_tool.init(tmp_path / "pki")
    pki_tool.issue(tmp_path / "pki", "dashboard", "dashboard")
    users.add(tmp_path / "users.toml", "olive", "owner", "correct horse battery")
    conf = settings.DashboardSettings(
        pki=str(tmp_path / "pki"), users=str(tmp_path / "users.toml"), login_failures=3
    )
    app = make_app(conf, Signer(load_key(tmp_path / "session.key"), 1))
    clock = [0.0]
    app[THROTTLE].clock = lambda: clock[0]

    right = ("olive", "correct horse battery")
    tries = [("olive", "wrong")] * 4 + [right, ("ops", "x")]

    async def attempts() -> list[tuple[int, str | None]]:
        async with TestClient(TestServer(app)) as client:
            out = []
            for k, (user, password) in enumerate([*tries, right]):
                if k == len(tries):
                    clock[0] = 900.0  # the window has passed
                form = {"user": user, "password": password}
                r = await client.post("/login", data=form, allow_redirects=False)
                out.append((r.status, r.headers.get("Retry-After")))
            return out

    got = asyncio.run(attempts())
    assert got[:3] == [(401, None)] * 3
    assert got[3] == (429, "900") and got[4] == (429, "900")  # even the right password waits
    assert got[5] == (401, None)  # another name is not locked out
    assert got[6] == (303, None)


def test_a_broken_users_file_stops_serve_at_start_and_logins_after_it(tmp_path):
    pki_tool.init(tmp_path / "pki")
    pki_tool.issue(tmp_path / "pki", "dashboard", "dashboard")
    (tmp_path / "users.toml").write_bytes(b"\xff\xfe garbage")
    cfg = tmp_path / "dashboard.toml"
    cfg.write_text(f'[dashboard]\npki = "pki"\nusers = "users.toml"\nport = {free_port()}\n')
    serve = [sys.executable, "-m", "ecoin.dashboard.cli", "-c", str(cfg), "serve"]
    done = subprocess.run(serve, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read the users file" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    (tmp_path / "users.toml").unlink()
    users.add(tmp_path / "users.toml", "olive", "owner", "correct horse battery")
    proc = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # logged once it listens
        assert '"event":"dashboard_started"' in first, first
        (tmp_path / "users.toml").write_text("[users.olive\n")  # broken while it runs
        conf = settings.load(cfg)
        app = make_app(conf, Signer(load_key(tmp_path / "session.key"), 1))

        async def login() -> int:
            async with TestClient(TestServer(app)) as client:
                r = await client.post("/login", data={"user": "olive", "password": "x"})
                return r.status

        assert asyncio.run(login()) == 503
        proc.terminate()
        rest = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0 and '"event":"dashboard_stopped"' in rest and "Traceback" not in rest, rest

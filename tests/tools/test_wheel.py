"""The product as a user installs it: a wheel, non-editable, into a fresh venv, one role's
extra at a time. Nothing here may reach back into the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*cmd: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, (
        f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, REPO)
    (found,) = out.glob("ecoin-*.whl")
    return found


def install(where: Path, wheel: Path, extra: str) -> Path:
    venv.create(where, with_pip=True)
    py = where / "bin" / "python"
    run(py, "-m", "pip", "install", "--quiet", f"{wheel}[{extra}]")
    return py


def test_tools_install_provisions_a_board_and_runs_a_simulated_device(
    wheel: Path, tmp_path: Path, bank_server
) -> None:
    py = install(tmp_path / "venv", wheel, "tools")
    where = run(py, "-c", "import ecoin.tools as t, ecoin.firmware as f; print(t.__file__, f.__file__)")
    assert str(REPO) not in where and "site-packages" in where  # the installed copy, not the checkout

    bank_server.admin.create_account("olive", "owner")
    bank_server.admin.fund("olive", 100)
    bank_server.admin.create_account("alice", "analyst", ["average"])
    out = tmp_path / "devices"
    run(py.with_name("ecoin-provision"), "new", "esp-1", "--board", "esp32", "--source", "--coins", "5",
        "--service", "average", "--bank", bank_server.url, "--pki", bank_server.pki, "--owner", "olive",
        "--set", "wifi_ssid=home", "--out", out, cwd=tmp_path)  # fmt: skip
    bundle = out / "esp-1"
    for name in ("main.py", "app.py", "wire.py", "session.py", "board.py", "config.json", "coins.0.bin"):
        assert (bundle / name).is_file(), name
    assert "esp32" in (bundle / "board.py").read_text().lower()
    assert len((bundle / "coins.0.bin").read_bytes()) == 5 * 32

    # The whole system from the installed copy: bank, analyst, gateway, firmware on MicroPython.
    demo = run(py, "-m", "ecoin.sim.demo", "--devices", "1", "--ops", "1", "--workdir", tmp_path / "demo",
               cwd=tmp_path)  # fmt: skip
    summary = json.loads(demo.strip().splitlines()[-1])
    assert (summary["ops_ok"], summary["ops_failed"], summary["audit_ok"]) == (1, 0, True), demo[-2000:]
    assert summary["interpreter"] == "micropython"


def test_gateway_install_pulls_nothing_of_the_bank(wheel: Path, tmp_path: Path) -> None:
    py = install(tmp_path / "venv", wheel, "gateway")
    assert "usage" in run(py.with_name("ecoin-gateway"), "--help").lower()
    loaded = run(py, "-c", "import sys, ecoin.gateway.cli, ecoin.gateway.service, importlib.util as u;"
                 "print(json.dumps([sorted(m for m in sys.modules if m.startswith('ecoin.')),"
                 "u.find_spec('psycopg') is not None, u.find_spec('fastjsonschema') is not None]))"
                 .replace("import sys,", "import json, sys,"))  # fmt: skip
    modules, has_psycopg, has_schema_lib = json.loads(loaded)
    assert not has_psycopg and not has_schema_lib  # the bank's and the analyst's dependencies
    assert [m for m in modules if m.startswith(("ecoin.bank", "ecoin.analyst", "ecoin.tools"))] == []
    assert "ecoin.gateway.service" in modules

"""`ecoin-bank` administration commands, run as a real process on a real configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecoin.testing.bank import BankProcess

from .helpers import DEVICE_KEY

COMMANDS = ["", "serve", "init", "migrate", "account", "account create", "account fund", "account list"]
COMMANDS += ["device", "device add", "device list", "audit", "expire"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.bank.cli", *command.split(), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "usage: ecoin-bank" in done.stdout


def test_administration_then_expiry(pki: Path, tmp_path: Path):
    # Coins that expire at once, so `expire` has work to do.
    bank = BankProcess(tmp_path / "bank", pki, coin_expiry_days=0)
    assert "created master key" in bank.cli("init").stdout
    assert "kept master key" in bank.cli("init").stdout  # idempotent
    bank.cli("account", "create", "olive", "--kind", "owner")
    bank.cli("account", "create", "alice", "--kind", "analyst", "--service", "average", "--service", "stats")
    assert "olive balance 50" in bank.cli("account", "fund", "olive", "50", "--request-id", "f1").stdout
    assert "olive balance 50" in bank.cli("account", "fund", "olive", "50", "--request-id", "f1").stdout
    key_file = tmp_path / "dev1.key"
    key_file.write_text(DEVICE_KEY.hex() + "\n")
    bank.cli("device", "add", "dev1", "--owner", "olive", "--key-file", str(key_file))
    assert "dev1" in bank.cli("device", "list").stdout
    listing = bank.cli("account", "list").stdout
    assert "alice" in listing and "average,stats" in listing

    failed = bank.cli("account", "create", "olive", "--kind", "owner", check=False)
    assert failed.returncode == 1 and "exists" in failed.stderr and "Traceback" not in failed.stderr

    with bank:
        with bank.client("owner", "olive") as olive:
            olive.withdraw("dev1", 20)
            assert olive.balance() == 30
    assert "expired and refunded 20 coins" in bank.cli("expire").stdout
    assert "expired and refunded 0 coins" in bank.cli("expire").stdout
    audit = bank.cli("audit").stdout
    assert "expired          20" in audit and "audit passed" in audit
    assert "olive" in bank.cli("account", "list").stdout
    assert " 50 " in bank.cli("account", "list").stdout.split("olive", 1)[1]


def test_bad_configuration_is_a_clear_error(tmp_path: Path):
    conf = tmp_path / "bank.toml"
    conf.write_text('[bank]\nport = "eighty"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.bank.cli", "-c", str(conf), "audit"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "bank.port: expected int" in done.stderr


def bank_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, "ECOIN_BANK_CONFIG": "/nonexistent/bank.toml", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ecoin.bank.cli", *args], capture_output=True, text=True, cwd=cwd, env=full_env
    )


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("[server]\nport = 1\n", "no [bank] table"),
        ("[bank]\nidle_timeout_s = 0\n", "bank.idle_timeout_s: must be > 0"),
        ("[bank]\nmax_connections = -5\n", "bank.max_connections: must be > 0"),
        ("[bank]\nport = 70000\n", "bank.port: must be 0 to 65535"),
        ('[bank]\ndb = "mysql://x/ecoin"\n', "bank.db: a SQLite file or a postgresql:// URL, not mysql://"),
        ("[bank]\nlisten_port = 1\n", "unknown key(s) listen_port"),
    ],
)
def test_configuration_errors_exit_2_and_name_the_key(tmp_path: Path, toml: str, says: str):
    conf = tmp_path / "bank.toml"
    conf.write_text(toml)
    done = bank_cli("-c", str(conf), "audit")
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr


def test_the_configuration_comes_from_c_or_the_environment(tmp_path: Path):
    missing = bank_cli("audit")
    assert missing.returncode == 2 and "pass -c/--config or set ECOIN_BANK_CONFIG" in missing.stderr
    conf = tmp_path / "etc" / "bank.toml"
    conf.parent.mkdir()
    conf.write_text('[bank]\ndb = "data/bank.sqlite3"\nmaster_key = "data/master.key"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = bank_cli("init", cwd=elsewhere, env={"ECOIN_BANK_CONFIG": str(conf)})
    assert done.returncode == 0, done.stderr
    # Relative paths are the configuration file's, whatever the working directory.
    assert (conf.parent / "data" / "bank.sqlite3").is_file() and (
        conf.parent / "data" / "master.key"
    ).is_file()
    assert not list(elsewhere.iterdir())


def test_a_runtime_failure_exits_1(pki: Path, tmp_path: Path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        bank = BankProcess(tmp_path / "bank", pki, workers=0, port=taken.getsockname()[1], metrics_port=0)
        bank.cli("init")
        done = bank.cli("serve", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "address already in use" in done.stderr.lower()

"""PostgreSQL going away under a running bank: a clear 503, nothing half done, and service
resumes by itself when the database is back."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ecoin.common import bank_errors as errors
from ecoin.testing.bank import BankProcess
from ecoin.testing.servers import find_program

from .helpers import DEVICE_KEY
from .test_bank_api import items_for


def pg_ctl(workdir: Path, *args: str) -> None:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    run_as = {}
    if os.geteuid() == 0:
        pw = pwd.getpwnam(next(u for u in ("postgres", "nobody") if _user(u)))
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid}
    cmd = [find_program("pg_ctl", *(str(d) for d in dirs)), "-D", str(workdir / "pgdata"), "-w", *args]
    subprocess.run(cmd, check=True, capture_output=True, **run_as)


def _user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_database_down_then_back(pki: Path, tmp_path: Path, pg_server, pg_dsn: str):
    _, workdir = pg_server
    port = urlsplit(pg_dsn).port
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=on"
    with BankProcess(tmp_path / "bank", pki, db=pg_dsn, workers=0) as bank:
        bank.admin.create_account("olive", "owner")
        bank.admin.create_account("alice", "analyst", ["average"])
        bank.admin.fund("olive", 10)
        with bank.client("owner", "olive") as olive, bank.client("analyst", "alice") as alice:
            olive.register_device("dev1", DEVICE_KEY)
            w = olive.withdraw("dev1", 3)
            items = items_for(w, w.coins)
            pg_ctl(workdir, "-m", "fast", "stop")
            try:
                with pytest.raises(errors.Unavailable):
                    alice.redeem(items)
                with pytest.raises(errors.Unavailable):
                    olive.withdraw("dev1", 1)
                assert alice.healthz()  # the bank itself is still up
            finally:
                pg_ctl(workdir, "-o", opts, "-l", str(workdir / "pg.log"), "start")
            assert all(r.ok for r in alice.redeem(items))
            assert alice.balance() == 3 and olive.balance() == 7
        assert bank.cli("audit").returncode == 0

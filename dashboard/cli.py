"""``ecoin-dashboard``: the web dashboard for owners and operators (docs/DASHBOARD.md).

    ecoin-dashboard -c dashboard.toml serve
    ecoin-dashboard -c dashboard.toml user add olive --role owner < password.txt
    ecoin-dashboard -c dashboard.toml user add ops --role operator --password-file ops.pass
    ecoin-dashboard -c dashboard.toml user list

Exit codes as every ecoin command (``ecoin.common.cli``): 2 for a configuration or usage
error, 1 for a failure at run time (a port taken), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ecoin.common import logs
from ecoin.common.cli import ConfigFile, dispatch
from ecoin.common.config import ConfigError

from . import users
from .settings import DashboardSettings, load

CONFIG = ConfigFile("dashboard")
log = logging.getLogger("ecoin.dashboard")


def cmd_serve(s: DashboardSettings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import make_app
    from .sessions import Signer, load_key

    logs.setup(s.log_level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for path in s.tls_paths():
        if not Path(path).is_file():
            raise ConfigError(f"{path}: the dashboard's certificate, key or CA is missing (ecoin-pki issue)")
    users.load(s.users)  # a broken users file is a configuration error now, not a 500 per login
    app = make_app(s, Signer(load_key(s.session_key), s.session_hours))
    started = {"listen": s.listen, "port": s.port, "bank": s.bank}
    try:  # run_app "prints" once it listens; it returns on SIGINT or SIGTERM
        web.run_app(
            app,
            host=s.listen,
            port=s.port,
            access_log=None,
            print=lambda _: log.info("dashboard_started", extra=started),
        )
    except OSError as exc:
        raise OSError(f"cannot listen on {s.listen}:{s.port}: {exc.strerror or exc}") from None
    log.info("dashboard_stopped")
    return 0


def cmd_user(s: DashboardSettings, args: argparse.Namespace) -> int:
    if args.action == "list":
        for u in users.load(s.users).values():
            print(f"{u.name}\t{u.role}")
        return 0
    source = Path(args.password_file).read_text() if args.password_file else sys.stdin.readline()
    users.add(s.users, args.name, args.role, source.strip("\r\n"))
    print(f"{args.name}: {args.role}, in {s.users}")
    return 0


def parser() -> argparse.ArgumentParser:
    cmds = CONFIG.commands("ecoin-dashboard", "The ecoin web dashboard for owners and operators.")
    cmds.add("serve", "serve the dashboard", cmd_serve)
    user = cmds.group("user", "add and list who may log in", cmd_user)
    add = user.add("add", "add or replace a user (password from stdin)")
    add.add_argument("name", help="an owner's account id at the bank, or an operator's name")
    add.add_argument(
        "--role",
        choices=users.ROLES,
        required=True,
        help="owner: its own devices and coins; operator: the services",
    )
    add.add_argument("--password-file", help="read the password from this file instead of stdin")
    user.add("list", "list users and roles")
    return cmds.parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(
        "ecoin-dashboard",
        parser(),
        argv,
        usage=(ConfigError, ValueError),
        runtime=(OSError,),
        call=lambda args: args.fn(load(CONFIG.path(args)), args),
    )


if __name__ == "__main__":
    raise SystemExit(main())

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
    app = make_app(s, Signer(load_key(s.session_key), s.session_hours))
    log.info("dashboard_started", extra={"listen": s.listen, "port": s.port, "bank": s.bank})
    web.run_app(app, host=s.listen, port=s.port, print=None, access_log=None)
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
    common = CONFIG.option()
    p = argparse.ArgumentParser(
        prog="ecoin-dashboard",
        description="The ecoin web dashboard for owners and operators.",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="serve the dashboard").set_defaults(fn=cmd_serve)
    user = sub.add_parser("user", parents=[common], help="add and list who may log in")
    user.set_defaults(fn=cmd_user)
    acts = user.add_subparsers(dest="action", required=True)
    add = acts.add_parser("add", parents=[common], help="add or replace a user (password from stdin)")
    add.add_argument("name", help="an owner's account id at the bank, or an operator's name")
    add.add_argument("--role", choices=users.ROLES, required=True)
    add.add_argument("--password-file", help="read the password from this file instead of stdin")
    acts.add_parser("list", parents=[common], help="list users and roles")
    return p


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

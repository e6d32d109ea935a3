"""``ecoin-bank``: run and administer the bank.

    ecoin-bank -c bank.toml init                  # master key, schema, system accounts
    ecoin-bank -c bank.toml migrate               # upgrade the ledger's schema (back it up first)
    ecoin-bank -c bank.toml serve                 # the HTTPS API (mutual TLS) and /metrics
    ecoin-bank -c bank.toml account create olive --kind owner
    ecoin-bank -c bank.toml account create alice --kind analyst --service average
    ecoin-bank -c bank.toml account fund olive 1000
    ecoin-bank -c bank.toml account list
    ecoin-bank -c bank.toml device add dev1 --owner olive --key-file dev1.key
    ecoin-bank -c bank.toml device list
    ecoin-bank -c bank.toml policy set olive --device dev1 --service average --daily-cap 50
    ecoin-bank -c bank.toml policy show olive
    ecoin-bank -c bank.toml policy clear olive --device dev1
    ecoin-bank -c bank.toml statement olive --from 2026-12-01 --to 2026-12-31 --format csv
    ecoin-bank -c bank.toml audit                 # exit 1 and say what is wrong
    ecoin-bank -c bank.toml expire                # refund and purge expired coins

The administrative commands work on the database directly (on the bank's host); remote
parties use the API (``ecoin.common.bank_client``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ecoin.common import bank_errors as errors
from ecoin.common import policy_cli
from ecoin.common.cli import ConfigFile, dispatch
from ecoin.common.config import ConfigError
from ecoin.common.keyfiles import PKIError

from . import audit as audit_mod
from .books import day_number, to_csv
from .keys import Opener
from .ledger import Ledger
from .migrations import LATEST
from .settings import BankSettings, load, open_store
from .vault import Vault, VaultError, create_master_key

CONFIG = ConfigFile("bank")


def _ledger(s: BankSettings) -> Ledger:
    store = open_store(s)
    return Ledger(store, Vault.load(s.master_key), Opener(s.pki, 0), s.coin_expiry_days)


def cmd_serve(s: BankSettings, args: argparse.Namespace) -> int:
    from .server import run  # the server's imports are needed by this command only

    return run(s)


def cmd_init(s: BankSettings, args: argparse.Namespace) -> int:
    made = create_master_key(s.master_key)
    print(f"{'created' if made else 'kept'} master key {s.master_key}")
    if not s.postgres:
        Path(s.db).parent.mkdir(parents=True, exist_ok=True)
    return cmd_migrate(s, args)


def cmd_migrate(s: BankSettings, args: argparse.Namespace) -> int:
    store = open_store(s)
    try:
        for line in store.init():
            print(f"applied {line}")
    finally:
        store.close()
    print(f"ledger ready at schema version {LATEST}: {'postgresql' if s.postgres else s.db}")
    return 0


def cmd_account(s: BankSettings, args: argparse.Namespace) -> int:
    ledger = _ledger(s)
    if args.action == "create":
        a = ledger.create_account(args.id, args.kind, args.service or [])
        print(f"created {a.kind} account {a.name}")
    elif args.action == "fund":
        a = ledger.fund(args.id, args.amount, args.request_id)
        print(f"{a.name} balance {a.balance}")
    else:
        for a in ledger.accounts():
            print(f"{a.name:<32} {a.kind:<8} {a.balance:>12} {','.join(a.services)}")
    return 0


def cmd_device(s: BankSettings, args: argparse.Namespace) -> int:
    ledger = _ledger(s)
    if args.action == "add":
        key = Path(args.key_file).read_bytes()
        if len(key.strip()) == 64:  # a hex file (with or without a newline)
            key = bytes.fromhex(key.strip().decode())
        ledger.register_device(args.owner, args.id, key)
        print(f"registered device {args.id} of {args.owner}")
    else:
        store = ledger.store
        owners = {a.id: a.name for a in store.run(lambda tx: tx.accounts(), write=False)}
        for d in store.run(lambda tx: tx.devices(), write=False):
            print(f"{d.id:<32} {owners.get(d.owner, '?'):<32} counter {d.counter}")
    return 0


def cmd_policy(s: BankSettings, args: argparse.Namespace) -> int:
    books = _ledger(s).books
    if args.action == "show":
        print(json.dumps(books.policies(args.owner), indent=1, sort_keys=True))
        return 0
    raw = policy_cli.policy_from(args) if args.action == "set" else None
    now = books.set_policy(args.owner, args.device, raw)
    where = f"device {args.device}" if args.device else "default"
    print(f"{args.owner} {where} policy: {json.dumps(now, sort_keys=True) if now is not None else 'none'}")
    return 0


def cmd_statement(s: BankSettings, args: argparse.Namespace) -> int:
    ledger = _ledger(s)
    first, last = (
        None if v is None else day_number(v, n) for v, n in ((args.start, "from"), (args.end, "to"))
    )
    kind = ledger.balance(args.account).kind
    make = ledger.books.owner_statement if kind == "owner" else ledger.books.analyst_statement
    statement = make(args.account, first, last)
    if args.format == "csv":
        sys.stdout.write(to_csv(statement))
    else:
        print(json.dumps(statement, indent=1))
    return 0


def cmd_audit(s: BankSettings, args: argparse.Namespace) -> int:
    report = audit_mod.verify(open_store(s))
    for name, value in report.figures.items():
        print(f"{name:<16} {value}")
    if report.ok:
        print("audit passed: the chain holds and the ledger reconciles")
        return 0
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"audit FAILED: {len(report.problems)} problem(s)", file=sys.stderr)
    return 1


def cmd_expire(s: BankSettings, args: argparse.Namespace) -> int:
    n = _ledger(s).expire()
    print(f"expired and refunded {n} coins")
    return 0


def parser() -> argparse.ArgumentParser:
    cmds = CONFIG.commands("ecoin-bank", "The ecoin bank: a one-time coin ledger behind mutual TLS.")
    cmds.add("serve", "run the HTTPS API", cmd_serve)
    cmds.add("init", "create the master key and the ledger", cmd_init)
    cmds.add("migrate", "upgrade the ledger's schema to this bank's version", cmd_migrate)

    acc = cmds.group("account", "create, fund and list accounts", cmd_account)
    create = acc.add("create", "create an owner or analyst account")
    create.add_argument("id", help="account id = the CN of its certificate")
    create.add_argument(
        "--kind",
        choices=("owner", "analyst"),
        required=True,
        help="an owner buys coins; an analyst redeems them",
    )
    create.add_argument("--service", action="append", help="a service the analyst offers (repeat)")
    fund = acc.add("fund", "credit an owner account")
    fund.add_argument("id", help="the owner account to credit")
    fund.add_argument("amount", type=int, help="units to credit (one unit buys one coin)")
    fund.add_argument("--request-id", help="makes a repeat of this command a no-op")
    acc.add("list", "list accounts and balances")

    dev = cmds.group("device", "register and list devices", cmd_device)
    add = dev.add("add", "register a device and its key")
    add.add_argument("id", help="device id")
    add.add_argument("--owner", required=True, help="the owner account the device belongs to")
    add.add_argument("--key-file", required=True, help="the 32-byte device key (raw or 64 hex digits)")
    dev.add("list", "list devices")

    pol = cmds.group("policy", "set, show and clear an owner's policies", cmd_policy)
    pset = pol.add("set", "set a device's policy or the owner's default")
    pset.add_argument("owner", help="the owner account")
    policy_cli.add_policy_flags(pset)
    pol.add("show", "print an owner's policies as JSON").add_argument("owner", help="the owner account")
    pclear = pol.add("clear", "remove a device's policy or the default")
    pclear.add_argument("owner", help="the owner account")
    pclear.add_argument("--device", help="the device (default: the owner's default policy)")

    st = cmds.add("statement", "an owner's or analyst's statement", cmd_statement)
    st.add_argument("account", help="the owner or analyst account")
    policy_cli.add_period_flags(st)
    cmds.add("audit", "verify the audit chain and reconcile", cmd_audit)
    cmds.add("expire", "refund and purge expired coins", cmd_expire)
    return cmds.parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0, 1 for a runtime failure (the bank refused, the database or a port is
    unavailable), 2 for a configuration error (the file, a key, a key file, an argument)."""
    return dispatch(
        "ecoin-bank",
        parser(),
        argv,
        usage=(ConfigError, VaultError, PKIError, ValueError),
        runtime=(errors.BankError, OSError),
        call=lambda args: args.fn(load(CONFIG.path(args)), args),
    )


if __name__ == "__main__":
    raise SystemExit(main())

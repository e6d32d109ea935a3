"""``ecoin-provision``: make a device's bundle (key, bank registration, coins, broker
password, config), put it on a board with mpremote or into a simulator's flash directory,
claim refunds for the coins a device holds in doubt, set the owner's policies and read its
statement at the bank. See docs/PROVISIONING.md.

Settings come from flags, else from the ``[provision]`` table of ``--config FILE``, else
from the defaults below. The library is ``ecoin.tools.provisioning``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoin.common import cli, policy_cli
from ecoin.common import config as ecoin_config
from ecoin.common.bank_client import BadUrl, split_url
from ecoin.common.bank_errors import BankError
from ecoin.common.claim_uri import ClaimUri, ClaimUriError
from ecoin.tools.provisioning import (
    BankParams,
    BoardTarget,
    Broker,
    ProvisionError,
    SimTarget,
    claim_refunds,
    deploy,
    device_status,
    find_bundle,
    install_bundle,
    provision_device,
    sticker,
)
from ecoin.tools.provisioning.args import parser
from ecoin.tools.provisioning.bundle import load_meta
from ecoin.tools.provisioning.common import bank_client, require, tty_confirm
from ecoin.tools.provisioning.flash import FlashError

BOARDS = tuple(deploy.boards())


@dataclass(frozen=True)
class Settings:
    """The ``[provision]`` table of the config file (every key optional)."""

    bank: str = ""  # https://host:port
    pki: str = ""  # a PKI directory, with owner: the owner's certificate inside it
    owner: str = ""
    owner_cert: str = ""  # or the three files directly
    owner_key: str = ""
    ca: str = ""
    service: str = ""
    coins: int = 1000
    board: str = "sim"
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    tls: bool = False
    broker_credentials: str = ""
    out: str = "build/devices"
    mpremote: str = ""
    device: dict[str, Any] = field(default_factory=dict)  # extra firmware settings (config.json)


def _pick(args: argparse.Namespace, cfg: Settings, name: str) -> Any:
    value = getattr(args, name, None)
    return getattr(cfg, name) if value is None else value


def _bank(args: argparse.Namespace, cfg: Settings, default_url: str = "") -> BankParams:
    url = _pick(args, cfg, "bank") or default_url
    if not url:
        raise ProvisionError("give the bank's URL: --bank https://HOST:PORT")
    split_url(url)  # BadUrl (a usage error) before anything is read or asked
    cert, key, ca = (_pick(args, cfg, n) for n in ("owner_cert", "owner_key", "ca"))
    if cert or key:
        if not (cert and key and ca):
            raise ProvisionError("--owner-cert needs --owner-key and --ca")
        return BankParams(url, Path(cert), Path(key), Path(ca))
    pki, owner = _pick(args, cfg, "pki"), _pick(args, cfg, "owner")
    if not (pki and owner):
        raise ProvisionError("give the owner: --pki DIR --owner NAME, or --owner-cert/--owner-key/--ca")
    return BankParams.from_pki(url, pki, owner)


def _settings(text: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProvisionError(f"--set wants KEY=VALUE, not {item!r}")
        try:
            out[key] = json.loads(value)  # numbers, true/false, null, quoted strings
        except ValueError:
            out[key] = value
    return out


def cmd_new(args: argparse.Namespace, cfg: Settings) -> int:
    service = _pick(args, cfg, "service")
    if not service:
        raise ProvisionError("give the service the device buys: --service NAME (e.g. average)")
    creds = _pick(args, cfg, "broker_credentials")
    wifi = Path(args.wifi_password_file).read_text().strip() if args.wifi_password_file else None
    out = Path(_pick(args, cfg, "out"))
    before = load_meta(out / args.device_id) if (out / args.device_id).is_dir() else None
    bundle = provision_device(
        _bank(args, cfg),
        args.device_id,
        service,
        coins=_pick(args, cfg, "coins"),
        out_dir=out,
        board=_pick(args, cfg, "board"),
        broker=Broker(
            _pick(args, cfg, "broker_host"),
            _pick(args, cfg, "broker_port"),
            bool(_pick(args, cfg, "tls")),
            credentials=Path(creds) if creds else None,
        ),
        config={**cfg.device, **_settings(args.set)},
        ca_cert=(_pick(args, cfg, "ca") or None) if _pick(args, cfg, "tls") else None,
        wifi_password=wifi,
        mpy=False if args.source else None,
        renew=args.renew,
        reconfigure=args.reconfigure,
        yes=args.yes,
        confirm=tty_confirm,
        progress=True,
    )
    meta = load_meta(bundle) or {}
    if before and before.get("state") == "complete" and not args.renew:
        done = (
            "settings rewritten"
            if args.reconfigure
            else "nothing changed (--reconfigure applies new settings)"
        )
        print(f"{args.device_id}: already provisioned, nothing withdrawn; {done}")
    print(
        f"{meta['device_id']}: bundle {bundle} (generation {meta['generation']}, {meta['coins']} coins, "
        f"board {meta['board']}, service {meta['service']})"
    )
    fresh = not (before and before.get("state") == "complete")
    if (fresh or args.new_claim) and not args.no_claim:
        _sticker(args, cfg, meta["device_id"], bundle)
    return 0


def _sticker(args: argparse.Namespace, cfg: Settings, device_id: str, bundle: Path) -> None:
    """Opens the device's claim at the bank and prints and writes its QR code."""
    params = _bank(args, cfg)
    with bank_client(params) as client:
        uri = sticker.offer(client, device_id, params.url)
    paths = sticker.write(uri, bundle / sticker.STICKER)
    sticker.show(uri, sys.stdout)
    print(f"{device_id}: claim URI (one use; keep it secret until the sticker is on the device):")
    print(f"  {uri}")
    print(f"  sticker: {paths['png']} and {paths['svg']}")


def cmd_claim(args: argparse.Namespace, cfg: Settings) -> int:
    uri = ClaimUri.parse(args.uri)
    params = _bank(args, cfg, default_url=uri.bank)
    with bank_client(params) as client:
        done = client.claim_device(uri.device_id, uri.secret)
    print(f"{done['device_id']}: claimed; it is {done['owner']}'s now (was {done['previous']}'s)")
    return 0


def cmd_transfer(args: argparse.Namespace, cfg: Settings) -> int:
    with bank_client(_bank(args, cfg)) as client:
        done = client.transfer_device(args.device_id, args.to)
    print(f"{done['device_id']}: transferred to {done['owner']} with the coins it holds")
    return 0


def cmd_decommission(args: argparse.Namespace, cfg: Settings) -> int:
    require(
        f"Decommission {args.device_id}: its outstanding coins are refunded to you and its key is revoked "
        "for good (the device can never top up or be claimed again).",
        args.yes,
        tty_confirm,
    )
    with bank_client(_bank(args, cfg)) as client:
        done = client.decommission(args.device_id)
    print(f"{done['device_id']}: decommissioned; {done['refunded']} coins refunded, its key revoked")
    # The bank cannot reach the gateway's broker: its operator removes the login.
    print(f"  its broker login stays until {done['device_id']} leaves the gateway's [gateway.broker] devices")
    print("  and `ecoin-gateway broker-config` runs again (docs/PROVISIONING.md)")
    return 0


def cmd_flash(args: argparse.Namespace, cfg: Settings) -> int:
    if args.device_id and args.device and args.device_id != args.device:
        raise ProvisionError("DEVICE_ID and --device disagree")
    bundle = find_bundle(_pick(args, cfg, "out"), args.device_id or args.device)
    t = BoardTarget(args.port, _pick(args, cfg, "mpremote") or None)
    sizes = install_bundle(
        bundle,
        t,
        board=args.board,
        firmware_only=args.firmware_only,
        yes=args.yes,
        confirm=tty_confirm,
        progress=True,
    )
    for name, size in sizes.items():
        print(f"{size:>10} {name}")
    what = "firmware and settings (coins kept)" if args.firmware_only else "sizes and coin store checked"
    print(f"{bundle.name}: {len(sizes)} files on {args.port}, {what}")
    if args.reset:
        t.run("reset")
        print("board reset: the firmware starts")
    else:
        print(f"reset the board (or: mpremote connect {args.port} reset) to start the firmware")
    return 0


def cmd_deploy_sim(args: argparse.Namespace, cfg: Settings) -> int:
    bundle = find_bundle(_pick(args, cfg, "out"), args.device_id)
    t = SimTarget(args.flash, create=True)
    sizes = install_bundle(
        bundle,
        t,
        board="sim",
        firmware_only=args.firmware_only,
        yes=args.yes,
        confirm=tty_confirm,
        progress=True,
    )
    print(f"{bundle.name}: {len(sizes)} files in {args.flash}, sizes and coin store checked")
    return 0


def cmd_refund(args: argparse.Namespace, cfg: Settings) -> int:
    report = claim_refunds(
        _bank(args, cfg),
        args.device_id,
        port=args.port,
        flash_dir=args.flash,
        refund=not args.check,
        mpremote=_pick(args, cfg, "mpremote") or None,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return 0
    for claim in report.claims:
        print(claim.line())
    counts = ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in sorted(report.counts().items()))
    verb = "checked" if args.check else "claimed"
    print(f"{args.device_id}: {len(report.claims)} coins {verb} ({counts or 'none in doubt'})")
    print(f"on the device: {report.settled}")
    _repl_note(args.port)
    return 0


def _repl_note(port: str | None) -> None:
    if port:  # mpremote stopped the firmware to read the flash
        print(
            f"the board is at its REPL: reset it (mpremote connect {port} reset) to restart it",
            file=sys.stderr,
        )


def cmd_status(args: argparse.Namespace, cfg: Settings) -> int:
    info = device_status(port=args.port, flash_dir=args.flash, mpremote=_pick(args, cfg, "mpremote") or None)
    if info["device_id"] != args.device_id:
        raise ProvisionError(f"{info['target']} holds device {info['device_id']!r}, not {args.device_id!r}")
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(
        f"{info['device_id']} ({info['service']}) on {info['target']}: {info['coins_left']} coins left, "
        f"{info['coins_used']} used, {len(info['in_doubt'])} in doubt"
        + (", 1 operation pending" if info["pending"] else "")
        + f"; top-up counter {info['topup_counter']}"
    )
    for d in info["in_doubt"]:
        print(f"  in doubt: coin {d['coin']}  op {d['op_id'][:12]}  {d['why']}")
    _repl_note(args.port)
    return 0


def cmd_policy(args: argparse.Namespace, cfg: Settings) -> int:
    """The owner's own policies, through the API with its certificate."""
    with _bank(args, cfg).client() as bank:
        if args.action == "show":
            print(json.dumps(bank.policies(), indent=1, sort_keys=True))
            return 0
        try:
            raw = policy_cli.policy_from(args) if args.action == "set" else None
        except ValueError as exc:
            raise ProvisionError(str(exc)) from exc
        now = bank.set_policy(raw, args.device)
    where = f"device {args.device}" if args.device else "default"
    print(f"{where} policy: {json.dumps(now, sort_keys=True) if now is not None else 'none'}")
    return 0


def cmd_statement(args: argparse.Namespace, cfg: Settings) -> int:
    with _bank(args, cfg).client() as bank:
        answer = bank.statement(args.start, args.end, fmt=args.format)
    sys.stdout.write(answer if args.format == "csv" else json.dumps(answer, indent=1) + "\n")
    return 0


COMMANDS = {
    "policy": cmd_policy,
    "statement": cmd_statement,
    "new": cmd_new,
    "flash": cmd_flash,
    "deploy-sim": cmd_deploy_sim,
    "refund": cmd_refund,
    "status": cmd_status,
    "claim": cmd_claim,
    "transfer": cmd_transfer,
    "decommission": cmd_decommission,
}


CONFIG_ENV = "ECOIN_PROVISION_CONFIG"
# Keys holding file paths: taken from the configuration file's directory, as every ecoin file.
_PATHS = ("pki", "owner_cert", "owner_key", "ca", "broker_credentials", "out")


def _run(args: argparse.Namespace) -> int:
    path = args.config or os.environ.get(CONFIG_ENV)  # optional: flags alone are enough
    cfg = ecoin_config.load_section(Settings, path, "provision", _PATHS) if path else Settings()
    return int(args.fn(args, cfg))


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(
        "ecoin-provision",
        parser(BOARDS, COMMANDS),
        argv,
        usage=(ecoin_config.ConfigError, ClaimUriError, BadUrl),
        runtime=(ProvisionError, BankError, FlashError, OSError),
        call=_run,
        interrupted="interrupted; run the same command again to finish",
    )


if __name__ == "__main__":
    sys.exit(main())

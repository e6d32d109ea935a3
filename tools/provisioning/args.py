"""The command line of ``ecoin-provision``: every subcommand, flag and help text (the
commands themselves are in ``ecoin.tools.provision``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from ecoin.common import policy_cli


def _bank_flags(p: argparse.ArgumentParser, device: bool = False) -> None:
    g = p.add_argument_group("the bank and the owner (who pays for the coins)")
    g.add_argument("--bank", help="the bank's URL, https://HOST:PORT")
    g.add_argument("--pki", help="PKI directory holding owner/NAME.crt|.key and ca.crt (with --owner)")
    g.add_argument("--owner", help="the owner's name in the PKI (the CN of its certificate)")
    g.add_argument("--owner-cert", help="the owner's certificate (instead of --pki/--owner)")
    g.add_argument("--owner-key", help="the owner's private key")
    also = " (also copied onto the device as ca.crt with --tls)" if device else ""
    g.add_argument("--ca", help=f"the project CA, which the bank's certificate must come from{also}")


def _where(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", help=f"a board's serial port (e.g. /dev/ttyUSB0): {what} through mpremote")
    g.add_argument("--flash", type=Path, help=f"a simulated device's flash directory: {what} there")


def _common(p: argparse.ArgumentParser, mpremote: bool = False) -> None:
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML file with a [provision] table of defaults (default $ECOIN_PROVISION_CONFIG, if set)",
    )
    if mpremote:  # only the commands that talk to a board
        p.add_argument("--mpremote", help="the mpremote executable (default: the venv's)")


def parser(boards: tuple[str, ...], commands: Mapping[str, Callable[..., int]]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecoin-provision",
        description="Provision ecoin devices: make a device's bundle (key, bank registration, coins, "
        "broker password, config), put it on a board or a simulator, claim refunds of coins in doubt.",
        epilog="Flags override the [provision] table of --config. See docs/PROVISIONING.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "new",
        help="make (or finish) a device's bundle: register it, withdraw coins",
        description="Generate a device key, register the device at the bank, withdraw its coins and write "
        "its bundle (the flash layout) into OUT/DEVICE_ID. Safe to re-run: a finished bundle is never "
        "withdrawn again, and an interrupted run picks up the same coins (idempotent request id).",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="1-32 of A-Z a-z 0-9 . _ -")
    s.add_argument("--service", help="the analysis the device buys (e.g. average)")
    s.add_argument("--coins", type=int, help="coins to withdraw (1-10000; default 1000)")
    s.add_argument("--board", choices=boards, help="firmware for this board (default sim)")
    s.add_argument("--broker-host", help="the MQTT broker the device connects to (default 127.0.0.1)")
    s.add_argument("--broker-port", type=int, help="its port (default 1883)")
    s.add_argument(
        "--tls", action="store_true", default=None, help="TLS to the broker (copies --ca as ca.crt)"
    )
    s.add_argument(
        "--broker-credentials",
        help="credentials.toml of `ecoin-gateway broker-config`: "
        "take the device's broker password from it (added there if missing)",
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting of config.json (firmware/start.py), e.g. wifi_ssid=home",
    )
    s.add_argument("--wifi-password-file", help="file holding the WiFi password (written 0600 as wifi.pass)")
    s.add_argument("--source", action="store_true", help="put .py sources on the device instead of .mpy")
    s.add_argument(
        "--renew",
        action="store_true",
        help="withdraw a new generation of coins for an existing "
        "bundle (its old coin store is kept in archive/ for refunds)",
    )
    s.add_argument(
        "--reconfigure",
        action="store_true",
        help="rewrite a finished bundle's config.json (and broker.pass, ca.crt) from the flags; "
        "coins and keys stay (then: flash --firmware-only)",
    )
    s.add_argument("--yes", action="store_true", help="confirm --renew without asking")
    s.add_argument("--out", help="where bundles are written (default build/devices)")
    s.add_argument(
        "--no-claim", action="store_true", help="no claim URI and QR sticker (else made for a new bundle)"
    )
    s.add_argument(
        "--new-claim", action="store_true", help="a new claim URI for a finished bundle (voids the old one)"
    )
    _bank_flags(s, device=True)
    _common(s)

    s = sub.add_parser(
        "flash",
        help="copy a bundle onto a board with mpremote and verify it",
        description="Copy a device's bundle onto a MicroPython board with mpremote (fs cp), state.bin "
        "last, then list the board to check every size and the coin store's SHA-256. Asks before "
        "replacing a coin store already on the board (--yes to confirm without a terminal).",
    )
    s.add_argument(
        "device_id",
        metavar="DEVICE_ID",
        nargs="?",
        help="the bundle (default: --device, or the only bundle in --out)",
    )
    s.add_argument("--device", help="the bundle, as DEVICE_ID (the form `make flash` uses)")
    s.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0 or /dev/ttyACM0")
    s.add_argument("--board", choices=boards, help="refuse a bundle made for another board")
    s.add_argument("--yes", action="store_true", help="replace a coin store on the board without asking")
    s.add_argument("--reset", action="store_true", help="reset the board afterwards (starts the firmware)")
    s.add_argument(
        "--firmware-only",
        action="store_true",
        help="copy everything but the coin store onto the same device (update firmware or settings)",
    )
    s.add_argument("--out", help="where bundles are (default build/devices)")
    _common(s, mpremote=True)

    s = sub.add_parser(
        "deploy-sim",
        help="put a bundle into a simulated device's flash directory",
        description="Copy a device's bundle into a simulated device's flash directory (created if "
        "needed; stop the simulated device first). Same safety rule as flash: asks before "
        "replacing a coin store.",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="the device's id at the bank")
    s.add_argument("--flash", required=True, type=Path, help="the simulated device's flash directory")
    s.add_argument("--yes", action="store_true", help="replace a coin store there without asking")
    s.add_argument("--firmware-only", action="store_true", help="everything but the coin store")
    s.add_argument("--out", help="where bundles are (default build/devices)")
    _common(s)

    s = sub.add_parser(
        "refund",
        help="claim the device's in-doubt coins at the bank",
        description="Read the device's in-doubt coins (a board through mpremote, or a simulated flash "
        "directory), claim them at the bank with the owner's certificate and print the result per "
        "coin: refunded, redeemed (by whom, when), already refunded, or unknown. Coins are shown as "
        "short hashes only. Claiming again is harmless.",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="the device's id at the bank")
    _where(s, "read its coins")
    s.add_argument("--check", action="store_true", help="only ask the bank; refund nothing")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    _bank_flags(s)
    _common(s, mpremote=True)

    s = sub.add_parser(
        "status",
        help="show a device's coins left and in doubt",
        description="Read a device's coin store (a board through mpremote, or a simulated flash "
        "directory): coins left and used, coins in doubt and why, the top-up counter.",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="the device's id at the bank")
    _where(s, "read its coin store")
    s.add_argument("--json", action="store_true", help="print as JSON")
    _common(s, mpremote=True)
    s = sub.add_parser(
        "policy",
        help="set, show or clear the owner's policies at the bank",
        description="The rules the bank checks before it pays with a device's coins: which services "
        "and analysts, daily and monthly coin caps, a validity window. One policy per device, and a "
        "default for the owner's other devices; a device's policy replaces the default whole. "
        "A payment the policy forbids spends nothing: the coin stays refundable.",
    )
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "set",
        help="set a device's policy (--device) or the owner's default",
        description="set a device's policy (--device) or the owner's default",
    )
    policy_cli.add_policy_flags(a)
    _bank_flags(a)
    _common(a)
    a = actions.add_parser(
        "show", help="print the owner's policies as JSON", description="print the owner's policies as JSON"
    )
    _bank_flags(a)
    _common(a)
    a = actions.add_parser(
        "clear",
        help="remove a device's policy (--device) or the owner's default",
        description="remove a device's policy (--device) or the owner's default",
    )
    a.add_argument("--device", help="the device (default: the owner's default policy)")
    _bank_flags(a)
    _common(a)

    s = sub.add_parser(
        "statement",
        help="the owner's statement for a period",
        description="Coins bought, spent by device, service and analyst, refunded, expired and still "
        "outstanding (unused or in doubt) for the days --from..--to (UTC), as JSON or CSV, from the bank.",
    )
    policy_cli.add_period_flags(s)
    _bank_flags(s)
    _common(s)
    _claims(sub)
    for name, command in sub.choices.items():
        command.set_defaults(fn=commands[name])
    return p


def _claims(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """claim, transfer, decommission (docs/PROVISIONING.md "Claim by QR code")."""
    s = sub.add_parser(
        "claim",
        help="claim a device by its sticker's URI (ecoin:claim?...)",
        description="Pair the device of a claim URI with your owner account at the bank, once. The URI "
        "names the bank; --bank overrides it.",
    )
    s.add_argument("uri", metavar="URI", help="the claim URI from the sticker's QR code")
    _bank_flags(s)
    _common(s)
    s = sub.add_parser(
        "transfer",
        help="hand one of your devices, with its coins, to another owner",
        description="hand one of your devices, with its coins, to another owner",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="the device's id at the bank")
    s.add_argument("--to", required=True, help="the new owner's account id")
    _bank_flags(s)
    _common(s)
    s = sub.add_parser(
        "decommission",
        help="retire a device: refund its outstanding coins, revoke its key",
        description="Refund every outstanding coin of the device to you and revoke its key at the bank, "
        "for good. Asks first (--yes to confirm without a terminal).",
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="the device's id at the bank")
    s.add_argument("--yes", action="store_true", help="decommission without asking")
    _bank_flags(s)
    _common(s)

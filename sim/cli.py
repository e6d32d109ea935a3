"""``ecoin-sim``: simulated collectors, each the unchanged firmware in its own MicroPython
unix-port process (heap capped like a board) and its own flash directory.

    ecoin-sim deploy FLASH --device-id dev1 --service average --coins coins.bin \\
        --device-key device.key --bank-key coin.json [--broker 127.0.0.1:1883] [--set key=value]
    ecoin-sim run FLASH_OR_FLEET... [--devices N] [--heap 72K] [--runtime auto]
    ecoin-sim status FLASH...
    ecoin-sim claim FLASH            # the bank's POST /v1/claims body for its coins in doubt
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecoin.common import cli, names
from ecoin.sim.device import RUNTIMES, SimDevice
from ecoin.tools.provisioning import flash
from ecoin.tools.provisioning.bundle import firmware_settings
from ecoin.tools.provisioning.deploy import DeployError, deploy_device, find_tool


class CliError(Exception):
    """A usage error, reported in one line."""


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a string


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--broker wants HOST:PORT with a port of 1 to 65535, not {text!r}")
    return host or "127.0.0.1", int(port)


def _bank_key(path: str) -> dict[str, Any]:
    """The coin public key as ecoin-pki writes it (coin/<kid>.json)."""
    try:
        key = json.loads(Path(path).read_text())
    except ValueError:
        key = None
    if not isinstance(key, dict) or not {"kid", "n", "e"} <= set(key):
        raise CliError(
            f'--bank-key {path}: not a coin public key ({{"kid","n","e"}}: the pki\'s coin/<kid>.json)'
        )
    return key


def _deploy(args: argparse.Namespace) -> int:
    if not names.is_id(args.device_id):
        raise CliError(f"--device-id {args.device_id!r}: {names.ID_RULE}")
    config: dict[str, Any] = json.loads(Path(args.config).read_text()) if args.config else {}
    config["service"] = args.service or config.get("service")
    if args.broker:
        config["broker_host"], config["broker_port"] = _broker(args.broker)
    known = firmware_settings()
    for item in args.set or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"--set wants key=value, not {item!r}")
        if key not in known:
            raise CliError(f"--set {key}: not a firmware setting (see firmware/start.py DEFAULTS)")
        config[key] = _value(text)
    bank = _bank_key(args.bank_key)
    password = Path(args.password_file).read_text().strip() if args.password_file else None
    out = deploy_device(
        Path(args.flash),
        args.device_id,
        config,
        Path(args.coins).read_bytes(),
        Path(args.device_key).read_bytes(),
        bank,
        board=args.board,
        mpy=False if args.source else None,
        broker_password=password,
        ca_cert=Path(args.ca) if args.ca else None,
    )
    state = flash.read_state(out)
    print(f"deployed {args.device_id} to {out}: {state.left} coins, board {args.board}")
    return 0


def _flash_dirs(paths: Sequence[str], limit: int | None) -> list[Path]:
    """Each path is a flash directory (it has config.json) or a fleet directory of them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").exists():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if (d / "config.json").exists()))
        else:
            raise CliError(f"{p}: not a flash directory (no config.json) nor a directory of them")
    if not found:
        raise CliError("no flash directories found")
    return found[:limit] if limit else found


def _run(args: argparse.Namespace) -> int:
    dirs = _flash_dirs(args.flash, args.devices)
    if args.runtime != "cpython" and not find_tool("micropython"):
        if args.runtime == "micropython":
            raise CliError("the micropython binary is not installed here; use --runtime cpython")
        print("ecoin-sim: no micropython binary here: running the firmware on CPython (no heap cap)")
    devices = [SimDevice(d, heap=args.heap, runtime=args.runtime) for d in dirs]
    offsets = {dev: dev.console.stat().st_size if dev.console.exists() else 0 for dev in devices}
    stopping = False

    def _interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Ctrl-C and SIGTERM (systemd, kill) both stop the devices; taken from before the first
    # start, so neither can leave a device process running without us.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for dev in devices:
            dev.start()
        where = f"{len(devices)} device(s) on {devices[0].runtime}, heap {args.heap}"
        print(f"ecoin-sim: {where}; Ctrl-C stops them")
        while True:
            for dev in devices:
                offsets[dev] = _echo(dev, offsets[dev])
            if stopping:
                for dev in devices:
                    dev.stop()
                stopping = False
            if not any(dev.running for dev in devices):
                break
            time.sleep(0.1)
        for dev in devices:
            offsets[dev] = _echo(dev, offsets[dev])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for dev in devices:
            dev.kill()
    codes = [dev.proc.returncode if dev.proc else None for dev in devices]
    return 0 if all(c == 0 for c in codes) else 1


def _echo(dev: SimDevice, offset: int) -> int:
    """Prints the device's new console lines, prefixed with its directory name."""
    try:
        with open(dev.console, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode(errors="replace").splitlines():
        print(f"[{dev.flash_dir.name}] {line}", flush=True)
    return offset + end


def _status(args: argparse.Namespace) -> int:
    for d in _flash_dirs(args.flash, None):
        state = flash.read_state(d)
        doubts = flash.read_in_doubt(d)
        pending = " (an operation in flight: in doubt at the next boot)" if state.pending_op else ""
        print(f"{d.name}: {state.left} coins left of {state.count}, {len(doubts)} in doubt{pending}")
        for doubt in doubts:
            print(f"  in doubt: op {doubt.op_id.hex()} ({doubt.why})")
    return 0


def _claim(args: argparse.Namespace) -> int:
    d = Path(args.flash)
    if not (d / "config.json").is_file():
        raise CliError(f"{d}: not a flash directory (no config.json)")
    device_id = json.loads((d / "config.json").read_text())["device_id"]
    print(json.dumps(flash.claim_body(d, device_id), indent=1))
    return 0


def _heap(text: str) -> str:
    """A MicroPython -X heapsize: bytes, or with K or M."""
    digits = text[:-1] if text[-1:].upper() in ("K", "M") else text
    if not digits.isdigit() or int(digits) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 72K, 1M or 65536")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecoin-sim",
        description="Simulated ecoin collectors: the firmware in MicroPython unix-port processes.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "deploy",
        help="write a device's flash directory (firmware, config, coins, secrets)",
        description="write a device's flash directory (firmware, config, coins, secrets)",
    )
    d.add_argument("flash", help="the new flash directory")
    d.add_argument("--device-id", required=True, help="the device id registered at the bank")
    d.add_argument("--service", help="the analysis the device buys (or in --config)")
    d.add_argument("--coins", required=True, help="file of 32-byte coins, back to back")
    d.add_argument("--device-key", required=True, help="file of the 32-byte device key")
    d.add_argument("--bank-key", required=True, help='the coin public key JSON {"kid","n","e"}')
    d.add_argument("--config", help="JSON file of firmware settings (see docs/FIRMWARE.md)")
    d.add_argument("--broker", help="host:port of the edge broker")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="one setting (JSON value)")
    d.add_argument("--password-file", help="the broker password")
    d.add_argument("--ca", help="the CA certificate that verifies the broker (with --set tls=true)")
    d.add_argument("--board", default="sim", help="sim (default), esp32 or pico_w")
    d.add_argument("--source", action="store_true", help="deploy .py sources instead of .mpy")
    d.set_defaults(fn=_deploy)
    r = sub.add_parser(
        "run",
        help="run devices until they stop (max_ops) or Ctrl-C",
        description="run devices until they stop (max_ops) or Ctrl-C",
    )
    r.add_argument("flash", nargs="+", help="flash directories, or directories of them")
    r.add_argument("--devices", type=_positive, help="run only the first N")
    r.add_argument("--heap", type=_heap, default="72K", help="MicroPython heap cap (default 72K, board-like)")
    r.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="micropython (the real unix port), cpython (no heap cap), or auto: micropython if installed",
    )
    r.set_defaults(fn=_run)
    s = sub.add_parser(
        "status",
        help="coins left and in doubt, read from the flash",
        description="coins left and in doubt, read from the flash",
    )
    s.add_argument("flash", nargs="+", help="flash directories, or directories of them")
    s.set_defaults(fn=_status)
    c = sub.add_parser(
        "claim",
        help="print the refund claim body for the coins in doubt",
        description="print the refund claim body for the coins in doubt",
    )
    c.add_argument("flash", help="the device's flash directory")
    c.set_defaults(fn=_claim)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(
        "ecoin-sim",
        parser(),
        argv,
        usage=(CliError, DeployError, ValueError, KeyError),
        runtime=(flash.FlashError, OSError),
    )


if __name__ == "__main__":
    raise SystemExit(main())

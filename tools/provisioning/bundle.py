"""``ecoin-provision new``: a device's bundle, built so that re-running it is always safe.

A bundle is a directory ``<out>/<device_id>/`` holding the device's flash layout exactly as
``ecoin.tools.provisioning.deploy.deploy_device`` writes it (firmware, ``config.json``, ``bank.json``,
``device.key``, ``broker.pass``, ``coins.0.bin``, ``state.bin``) plus ``provision.json``,
which never leaves the host. The steps, each recorded in ``provision.json`` before the next:

1. generate the 32-byte device key (written 0600 before the bank ever sees it);
2. register the device at the bank under the owner's certificate;
3. withdraw its coins with request id ``provision:<device_id>:<generation>``. The bank's
   withdraw is idempotent per request id, so a re-run after a crash anywhere gets the very
   same coins back instead of paying twice; a new generation (``renew``) is the only way
   to withdraw again, and it is explicit;
4. write the flash layout (``state.bin`` last) and mark the bundle complete.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from ecoin.common import bank_errors, names
from ecoin.common.bank_client import BankClient, Withdrawal
from ecoin.common.files import write_atomic as write_file
from ecoin.tools.provisioning import deploy, flash

from .common import (
    BankParams,
    Confirm,
    Progress,
    ProvisionError,
    bank_client,
    require,
    write_json,
)

META = "provision.json"
ARCHIVE = "archive"  # coin stores of earlier generations, kept for refund claims
HOST_ONLY = {META, ARCHIVE, "sticker"}  # what stays on the host when a bundle is flashed (sticker.py)
MAX_COINS = 10_000  # one withdrawal (docs/BANK_API.md)


@dataclass(frozen=True)
class Broker:
    """Where the device finds its MQTT broker, and its password (``credentials``: a
    ``credentials.toml`` of ``ecoin-gateway broker-config`` to take it from and add it to)."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    password: str | None = None
    credentials: Path | None = None


def request_id(device_id: str, generation: int) -> str:
    return f"provision:{device_id}:{generation}"


def firmware_settings() -> dict[str, Any]:
    """The firmware's own table of settings and defaults (firmware/start.py DEFAULTS)."""
    tree = ast.parse(resources.files("ecoin.firmware").joinpath("start.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in node.targets
        ):
            return dict(ast.literal_eval(node.value))
    raise ProvisionError("firmware/start.py has no DEFAULTS table")


def check_names(device_id: str, service: str | None = None) -> None:
    if not names.is_id(device_id):
        raise ProvisionError(f"device id {device_id!r}: use {names.ID_RULE}")
    if service is not None and not names.is_service(service):
        raise ProvisionError(f"service {service!r}: use {names.SERVICE_RULE}")


def load_meta(bundle: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((bundle / META).read_text()))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ProvisionError(f"{bundle / META} is not valid JSON: {exc}") from exc


def save_meta(bundle: Path, meta: dict[str, Any]) -> None:
    write_json(bundle / META, meta)


def complete_meta(bundle: Path) -> dict[str, Any]:
    meta = load_meta(bundle)
    if meta is None:
        raise ProvisionError(f"{bundle} is not a device bundle (no {META}); run `ecoin-provision new`")
    if meta.get("state") != "complete":
        raise ProvisionError(f"{bundle} is not complete; run `ecoin-provision new` again to finish it")
    return meta


def flash_files(bundle: Path) -> list[str]:
    """The names that go onto the device, in copy order: the coin store last."""
    names = sorted(
        p.name for p in bundle.iterdir() if p.name not in HOST_ONLY and not p.name.endswith(".part")
    )
    store = [n for n in ("coins.0.bin", "state.bin") if n in names]
    return [n for n in names if n not in store] + store


def credentials_table(path: Path) -> dict[str, Any]:
    """The credentials.toml of ``--broker-credentials`` (empty if it is not there yet); a file
    that cannot be read or written is a ProvisionError naming it, found before any coin moves."""
    if not path.parent.is_dir():
        raise ProvisionError(f"{path.parent} does not exist (the directory of --broker-credentials)")
    if not path.exists():
        return {}
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError(f"{path}: not a credentials.toml of broker-config ({exc})") from None
    if not isinstance(table.get("devices", {}), dict):
        raise ProvisionError(f"{path}: its devices must be a table of passwords")
    return table


def broker_password(device_id: str, broker: Broker) -> str:
    """The device's broker password: from the credentials file if it knows the device,
    else a new one (added to that file, so the next broker-config run accepts it)."""
    if broker.password:
        return broker.password
    if broker.credentials is None:
        return secrets.token_urlsafe(24)
    path = Path(broker.credentials)
    table = credentials_table(path)
    devices = dict(table.get("devices", {}))
    if device_id not in devices:
        devices[device_id] = secrets.token_urlsafe(24)
        write_file(path, tomli_w.dumps({**table, "devices": devices}).encode(), 0o600)
    return str(devices[device_id])


def device_config(
    service: str, broker: Broker, extra: Mapping[str, Any] | None, board: str
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "service": service,
        "broker_host": broker.host,
        "broker_port": broker.port,
        "tls": broker.tls,
    }
    cfg.update(extra or {})
    known = firmware_settings()
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ProvisionError(f"unknown firmware setting(s) {', '.join(unknown)} (see firmware/start.py)")
    if board != "sim" and cfg.get("transport", "mqtt") == "mqtt" and not cfg.get("wifi_ssid"):
        raise ProvisionError(f"board {board} needs WiFi: give wifi_ssid (--set wifi_ssid=NAME)")
    return cfg


def _as_broker(broker: Broker | Mapping[str, Any] | None) -> Broker:
    if broker is None:
        return Broker()
    if isinstance(broker, Broker):
        return broker
    return Broker(**dict(broker))


def provision_device(
    bank: BankClient | BankParams,
    device_id: str,
    service: str,
    *,
    coins: int = 1000,
    out_dir: str | Path = "build/devices",
    board: str = "sim",
    broker: Broker | Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    ca_cert: str | Path | None = None,
    wifi_password: str | None = None,
    mpy: bool | None = None,
    renew: bool = False,
    reconfigure: bool = False,
    yes: bool = False,
    confirm: Confirm | None = None,
    progress: bool = False,
) -> Path:
    """Builds (or finishes, or refreshes) the device's bundle and returns its directory.

    ``bank``: a ``BankClient`` with the owner's certificate, or ``BankParams``. ``config``:
    extra firmware settings (firmware/start.py). ``ca_cert``: copied as ``ca.crt`` (a TLS
    broker). A complete bundle is returned as it is: nothing is withdrawn or changed, unless
    ``reconfigure=True`` (config.json, and broker.pass and ca.crt when given, are rewritten
    from the arguments; never coins or keys). ``renew=True`` withdraws a new generation of
    coins (asks first: the old coin store is archived in the bundle).
    """
    check_names(device_id, service)
    if not 1 <= coins <= MAX_COINS:
        raise ProvisionError(f"coins must be 1 to {MAX_COINS}")
    try:
        deploy.manifest(board)
    except deploy.DeployError as exc:
        raise ProvisionError(str(exc)) from exc
    brk = _as_broker(broker)
    if not 1 <= brk.port <= 65535:
        raise ProvisionError(f"broker port {brk.port}: must be 1 to 65535")
    if brk.credentials is not None:  # read again when used: the file may change meanwhile
        credentials_table(Path(brk.credentials))
    cfg = device_config(service, brk, config, board)
    bundle = Path(out_dir) / device_id
    meta = load_meta(bundle)
    if meta and meta.get("state") == "complete" and not renew:
        _check_same(meta, service, board, coins)
        if reconfigure:
            _reconfigure(bundle, device_id, cfg, brk, ca_cert)
        return bundle
    with bank_client(bank) as client:
        _offered(client, service)
        steps = Progress(f"provision {device_id}", 5, progress)
        fresh = meta is None
        if meta is None:
            meta = _start(bundle, device_id, service, board, coins)
        elif renew:
            meta = _renew(bundle, meta, service, board, coins, yes, confirm)
        else:
            _check_same(meta, service, board, coins)
        steps.step("device key ready; registering at the bank")
        _register(client, bundle, meta, fresh)
        steps.step(f"registered; withdrawing {meta['coins']} coins")
        withdrawal = _withdraw(client, bundle, meta)
        steps.step("coins received; writing the flash layout")
        password = broker_password(device_id, brk)  # added to the file only for a device that has coins
        _write_flash(bundle, meta, cfg, withdrawal, password, ca_cert, wifi_password, mpy)
        steps.step("flash layout written")
        meta.update(state="complete", completed=int(time.time()))
        save_meta(bundle, meta)
        try:
            balance: int | str = client.balance()
        except bank_errors.BankError:
            balance = "?"
    steps.finish(f"{bundle} ({meta['coins']} coins; owner balance now {balance})")
    return bundle


def _offered(client: BankClient, service: str) -> None:
    """Coins for a service nobody sells would sit on the device unspent: refused first."""
    offered = client.services()
    if service not in offered:
        sold = ", ".join(offered) or "none yet"
        raise ProvisionError(f"no analyst at the bank offers the service {service!r} (offered: {sold})")


def _start(bundle: Path, device_id: str, service: str, board: str, coins: int) -> dict[str, Any]:
    bundle.mkdir(parents=True, exist_ok=True)
    # Only what an interrupted start leaves (a key not yet registered) may be there already.
    if {p.name for p in bundle.iterdir()} - {"device.key", "device.key.part", f"{META}.part"}:
        raise ProvisionError(f"{bundle} exists and is not a bundle; move it away first")
    os.chmod(bundle, 0o700)  # coins are money and the device key a secret: the owner's eyes only
    write_file(bundle / "device.key", os.urandom(32), 0o600)
    meta: dict[str, Any] = {
        "device_id": device_id,
        "service": service,
        "board": board,
        "coins": coins,
        "generation": 1,
        "state": "key",
        "created": int(time.time()),
        "deployed": [],
    }
    save_meta(bundle, meta)
    return meta


def _check_same(meta: dict[str, Any], service: str, board: str, coins: int) -> None:
    for name, value in (("service", service), ("board", board), ("coins", coins)):
        if meta.get(name) != value:
            raise ProvisionError(
                f"the bundle of {meta['device_id']} was made with {name} {meta.get(name)!r}, "
                f"not {value!r}; use the same, or --renew for a new generation of coins"
            )


def _reconfigure(
    bundle: Path, device_id: str, cfg: dict[str, Any], brk: Broker, ca_cert: str | Path | None
) -> None:
    """Settings only: coins and keys are never touched, so this is always safe."""
    password = broker_password(device_id, brk) if brk.password or brk.credentials else None
    text = json.dumps({**cfg, "device_id": device_id}, indent=1) + "\n"
    write_file(bundle / "config.json", text.encode())
    if password is not None:
        write_file(bundle / "broker.pass", password.encode(), 0o600)
    if ca_cert:
        write_file(bundle / "ca.crt", Path(ca_cert).read_bytes())


def _renew(
    bundle: Path,
    meta: dict[str, Any],
    service: str,
    board: str,
    coins: int,
    yes: bool,
    confirm: Confirm | None,
) -> dict[str, Any]:
    if meta.get("state") != "complete":
        raise ProvisionError("this bundle is not complete yet: run `new` without --renew to finish it")
    gen = int(meta["generation"])
    require(
        f"Renew {meta['device_id']}: withdraw {coins} new coins (generation {gen + 1}); the bundle's "
        f"current coin store is moved to {bundle / ARCHIVE / f'g{gen}'} (refund its coins from there).",
        yes,
        confirm,
    )
    keep = bundle / ARCHIVE / f"g{gen}"
    keep.mkdir(parents=True, exist_ok=True)
    counter = flash.read_state(bundle).counter if (bundle / "state.bin").exists() else 0
    for name in os.listdir(bundle):
        if name.startswith(("coins.", "state.", "doubt.", "settled.")):
            shutil.move(str(bundle / name), keep / name)
    for name in ("config.json", "device.key"):
        shutil.copy2(bundle / name, keep / name)
    meta.update(
        generation=gen + 1, state="registered", service=service, board=board, coins=coins, counter=counter
    )
    meta["deployed"] = []  # the new coins are on no device yet
    save_meta(bundle, meta)
    return meta


def _register(client: BankClient, bundle: Path, meta: dict[str, Any], fresh: bool) -> None:
    if meta["state"] != "key":
        return
    try:
        answer = client.register_device(meta["device_id"], (bundle / "device.key").read_bytes())
        meta["owner"] = answer.get("owner")
    except bank_errors.Exists as exc:
        if fresh:  # not a retry of ours: someone else's device has this id
            shutil.rmtree(bundle)
            raise ProvisionError(
                f"device {meta['device_id']} is already registered at the bank; choose another id "
                "(or run again with --out pointing at its bundle)"
            ) from exc
        # A retry: our last run registered the key and stopped before recording it.
    meta["state"] = "registered"
    save_meta(bundle, meta)


def _withdraw(client: BankClient, bundle: Path, meta: dict[str, Any]) -> Withdrawal:
    rid = request_id(meta["device_id"], int(meta["generation"]))
    try:
        withdrawal = client.withdraw(meta["device_id"], int(meta["coins"]), request_id=rid)
    except bank_errors.InsufficientFunds as exc:
        raise ProvisionError(
            f"the owner cannot pay {meta['coins']} coins: fund the account (ecoin-bank account fund), "
            "then run the same command again"
        ) from exc
    except bank_errors.Exists as exc:
        raise ProvisionError(f"the bank already used request id {rid} for another withdrawal") from exc
    if len(withdrawal.coins) != int(meta["coins"]):
        raise ProvisionError(f"the bank returned {len(withdrawal.coins)} coins, not {meta['coins']}")
    meta.update(request_id=rid, kid=withdrawal.kid.hex(), expires=withdrawal.expires)
    save_meta(bundle, meta)
    return withdrawal


def _write_flash(
    bundle: Path,
    meta: dict[str, Any],
    cfg: dict[str, Any],
    withdrawal: Withdrawal,
    password: str,
    ca_cert: str | Path | None,
    wifi_password: str | None,
    mpy: bool | None,
) -> None:
    # A store left by a run that stopped before "complete" was never deployed: redo it.
    for name in os.listdir(bundle):
        if name.startswith(("coins.", "state.")):
            (bundle / name).unlink()
    try:
        deploy.deploy_device(
            bundle,
            meta["device_id"],
            cfg,
            withdrawal.coins,
            (bundle / "device.key").read_bytes(),
            (withdrawal.kid, withdrawal.public_key),
            board=meta["board"],
            mpy=mpy,
            broker_password=password,
            wifi_password=wifi_password,
            ca_cert=Path(ca_cert) if ca_cert else None,
        )
    except deploy.DeployError as exc:
        raise ProvisionError(str(exc)) from exc
    os.chmod(bundle / "coins.0.bin", 0o600)
    counter = int(meta.get("counter", 0))
    if counter:  # the bank refuses top-up counters it has seen: carry the last one over
        state = flash.state_bytes(0, 0, len(withdrawal.coins), counter)
        write_file(bundle / "state.bin", state)

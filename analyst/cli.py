"""``ecoin-analyst``: offer paid analyses over MQTT.

    ecoin-analyst serve --config analyst.toml   # run the service until SIGTERM / Ctrl-C
    ecoin-analyst serve --instance 2            # a second process of the same analyst
    ecoin-analyst list                          # analysers installed (entry points)
    ecoin-analyst list --json                   # the same, with their schemas
    ecoin-analyst check --config analyst.toml   # read the configuration and say what is wrong

See docs/ANALYSTS.md for the configuration and for writing an analyser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ecoin.common import cli, health, logs
from ecoin.common.config import ConfigError

from . import discovery, plugins
from .settings import Settings, check, load

CONFIG = cli.ConfigFile("analyst")
log = logging.getLogger("ecoin.analyst")


def cmd_list(args: argparse.Namespace) -> int:
    found = discovery.discover()
    if args.json:
        out = {
            "analysers": [
                {"name": a.name, "description": a.description, "schema": a.schema, "options": a.options}
                for a in found.analysers.values()
            ],
            "problems": found.problems,
        }
        print(json.dumps(out, indent=2))
    else:
        for a in found.analysers.values():
            opts = " ".join(f"{k}={v}" for k, v in a.options.items())
            print(f"{a.name:<20} {a.description}" + (f" [options: {opts}]" if opts else ""))
        for problem in found.problems:
            print(f"skipped: {problem}", file=sys.stderr)
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    s = load(CONFIG.path(args))
    if args.instance:  # one configuration file, several processes (systemd: ecoin-analyst@N)
        s = check(dataclasses.replace(s, instance=args.instance))
    return s


def _analysers(s: Settings) -> dict[str, plugins.Analyser]:
    found = discovery.discover()
    for problem in found.problems:
        log.warning("analyser_skipped", extra={"problem": problem})
    missing = [name for name in s.services if name not in found.analysers]
    if missing:
        raise ConfigError(f"analyst.services: no analyser installed for {', '.join(missing)}")
    for name in s.services:  # options are checked now, not at the first operation
        found.analysers[name].configured(s.options.get(name, {}))
    unused = sorted(set(s.options) - set(s.services))
    if unused:
        raise ConfigError(f"analyst.options: options for services not offered: {', '.join(unused)}")
    return found.analysers


def _check_tls(s: Settings) -> None:
    """What serve will do with the files: build the TLS context, and find the analyst's own
    name and role in its certificate (the bank and broker know it by them)."""
    from ecoin.common import tls

    cert, key, ca = s.tls_paths()
    try:
        tls.client_context(cert, key, ca)
        who = tls.certificate_identity(cert)
    except (ssl.SSLError, ValueError, tls.PeerIdentityError) as exc:
        raise ConfigError(f"{cert}, {key}, {ca}: not a certificate, its key and the CA ({exc})") from None
    name, role = who
    if who != (s.id, "analyst"):
        raise ConfigError(f"{cert}: not analyst {s.id}'s certificate (its CN is {name!r}, its role {role!r})")


def cmd_check(args: argparse.Namespace) -> int:
    s = _settings(args)
    _analysers(s)
    for path in (*s.tls_paths(), *([s.broker.password_file] if s.broker.password_file else [])):
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such file")
    _check_tls(s)
    print(f"ok: analyst {s.id} (instance {s.instance}) offers {', '.join(s.services)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .service import Analyst  # paho and the bank client are needed by this command only

    s = _settings(args)
    logs.setup(s.log_level)
    analyst = Analyst(s, _analysers(s))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = (
        health.serve(s.metrics_listen, s.metrics_port, analyst.metrics.registry, analyst.status)
        if s.metrics_port
        else None
    )
    analyst.start()
    try:
        stop.wait()
    finally:
        log.info("analyst_stopping")
        analyst.stop()
        if server:
            server.shutdown()
    return 0


def parser() -> argparse.ArgumentParser:
    cmds = CONFIG.commands(
        "ecoin-analyst", "An ecoin analyst: paid analyses over MQTT, redeemed at the bank."
    )
    for name, fn, text in (
        ("serve", cmd_serve, "run the service until SIGTERM"),
        ("check", cmd_check, "read the configuration, the certificates and the analysers, then exit"),
    ):
        cmd = cmds.add(name, text, fn)
        cmd.add_argument("--instance", help="overrides analyst.instance (several processes of one analyst)")
    lst = cmds.add(
        "list", "list the installed analysers (entry-point group ecoin.analysers)", cmd_list, config=False
    )
    lst.add_argument("--json", action="store_true", help="machine-readable, with schemas and options")
    return cmds.parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli.dispatch(
        "ecoin-analyst",
        parser(),
        argv,
        usage=(ConfigError, plugins.PluginError, ValueError),
        runtime=(OSError,),
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""``ecoin-gateway``: run the edge gateway, or write the Mosquitto configuration.

ecoin-gateway -c /etc/ecoin/gateway.toml serve
ecoin-gateway -c /etc/ecoin/gateway.toml broker-config [--out DIR]

The file defaults to $ECOIN_GATEWAY_CONFIG, else /etc/ecoin/gateway.toml. Exit status: 0 on
a clean stop, 2 for a usage or configuration error, 1 for a failure at run time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ecoin.common import logs
from ecoin.common.config import ConfigError
from ecoin.gateway import brokerconf
from ecoin.gateway import config as gwconfig
from ecoin.gateway.link import LinkError
from ecoin.gateway.queue import QueueError
from ecoin.gateway.topup import TopupError

log = logging.getLogger("ecoin.gateway")
DEFAULT_CONFIG = os.environ.get("ECOIN_GATEWAY_CONFIG", "/etc/ecoin/gateway.toml")
USAGE, FAILED = 2, 1  # exit statuses: bad usage or configuration; failure at run time


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"TOML file with a [gateway] table (default $ECOIN_GATEWAY_CONFIG, else {DEFAULT_CONFIG})",
    )
    p = argparse.ArgumentParser(
        prog="ecoin-gateway",
        description="The ecoin edge gateway: routes device frames (MQTT and serial) to analysts "
        "and the bank. It never decrypts, holds no coin keys and logs no payloads.",
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the gateway until SIGTERM or SIGINT")
    gen = sub.add_parser(
        "broker-config",
        parents=[common],
        help="write mosquitto.conf, passwords and ACLs from the [gateway.broker] table",
    )
    gen.add_argument("--out", help="output directory (default: gateway.broker.out_dir)")
    return p


def serve(cfg: gwconfig.Config) -> int:
    from ecoin.gateway.service import Gateway  # paho and pyserial only when serving

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    gateway = Gateway(cfg).start()
    try:
        done.wait()
    finally:
        gateway.stop()
    return 0


def broker_config(cfg: gwconfig.Config, out: str | None) -> int:
    paths = brokerconf.generate(cfg.broker, out)
    log.info("broker_config_written", extra={k: str(v) for k, v in paths.items()})
    print(f"wrote {paths['conf']}; device passwords in {paths['credentials']} (0600)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # a usage error exits 2 here
    try:
        cfg = gwconfig.load(getattr(args, "config", None) or DEFAULT_CONFIG)
    except ConfigError as exc:
        print(f"ecoin-gateway: {exc}", file=sys.stderr)
        return USAGE
    logs.setup(cfg.log_level)
    try:
        if args.command == "serve":
            return serve(cfg)
        return broker_config(cfg, args.out)
    except ValueError as exc:  # the [gateway.broker] table cannot make a safe broker
        print(f"ecoin-gateway: {exc}", file=sys.stderr)
        return USAGE
    except (QueueError, LinkError, TopupError, OSError) as exc:
        log.error("gateway_failed", extra={"error": str(exc)})
        return FAILED


if __name__ == "__main__":
    raise SystemExit(main())

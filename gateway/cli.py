"""``ecoin-gateway``: run the edge gateway, or write the Mosquitto configuration.

ecoin-gateway serve --config /etc/ecoin/gateway.toml
ecoin-gateway broker-config --config /etc/ecoin/gateway.toml [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecoin-gateway",
        description="The ecoin edge gateway: routes device frames (MQTT and serial) to analysts "
        "and the bank. It never decrypts, holds no coin keys and logs no payloads.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway until SIGTERM or SIGINT")
    serve.add_argument("--config", required=True, help="the gateway's TOML file (see docs/GATEWAY.md)")
    gen = sub.add_parser(
        "broker-config", help="write mosquitto.conf, passwords and ACLs from the [broker] table"
    )
    gen.add_argument("--config", required=True, help="the gateway's TOML file")
    gen.add_argument("--out", help="output directory (default: broker.out_dir)")
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
    args = _parser().parse_args(argv)
    try:
        cfg = gwconfig.load(args.config)
    except ConfigError as exc:
        print(f"ecoin-gateway: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    try:
        if args.command == "serve":
            return serve(cfg)
        return broker_config(cfg, args.out)
    except (QueueError, LinkError, TopupError, OSError) as exc:
        log.error("gateway_failed", extra={"error": str(exc)})
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

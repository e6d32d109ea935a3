"""``ecoin-gateway``: run the edge gateway, or write the Mosquitto configuration.

ecoin-gateway -c /etc/ecoin/gateway.toml serve
ecoin-gateway -c /etc/ecoin/gateway.toml broker-config [--out DIR]

The file defaults to $ECOIN_GATEWAY_CONFIG, else /etc/ecoin/gateway.toml. Exit status as for
every ecoin command (ecoin.common.cli): 0 on a clean stop, 2 for a usage or configuration
error, 1 for a failure at run time.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from ecoin.common import cli, logs
from ecoin.common.config import ConfigError
from ecoin.gateway import brokerconf
from ecoin.gateway import config as gwconfig
from ecoin.gateway.link import LinkError
from ecoin.gateway.queue import QueueError
from ecoin.gateway.topup import TopupError

log = logging.getLogger("ecoin.gateway")
CONFIG = cli.ConfigFile("gateway")


def parser() -> argparse.ArgumentParser:
    cmds = CONFIG.commands(
        "ecoin-gateway",
        "The ecoin edge gateway: routes device frames (MQTT and serial) to analysts "
        "and the bank. It never decrypts, holds no coin keys and logs no payloads.",
    )
    cmds.add("serve", "run the gateway until SIGTERM or SIGINT", cmd_serve)
    gen = cmds.add(
        "broker-config",
        "write mosquitto.conf, passwords and ACLs from the [gateway.broker] table",
        cmd_broker_config,
    )
    gen.add_argument("--out", help="output directory (default: gateway.broker.out_dir)")
    return cmds.parser


def _config(args: argparse.Namespace) -> gwconfig.Config:
    cfg = gwconfig.load(CONFIG.path(args))
    logs.setup(cfg.log_level)
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from ecoin.gateway.service import Gateway  # paho and pyserial only when serving

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        gateway = Gateway(cfg).start()
    except (QueueError, LinkError, TopupError, OSError) as exc:
        log.error("gateway_failed", extra={"error": str(exc)})  # in the JSON log as well
        raise
    try:
        done.wait()
    finally:
        gateway.stop()
    return 0


def _check_broker_table(b: gwconfig.BrokerConf) -> None:
    """What the generator cannot do without: someone to let in, and the TLS files to name."""
    if not (b.devices or b.gateways or b.analysts):
        raise ConfigError("gateway.broker: lists no devices, gateways or analysts (is the table there?)")
    unnamed = [key for key in ("ca", "cert", "key") if not getattr(b, key)]
    if unnamed:
        raise ConfigError(f"gateway.broker: give {', '.join(unnamed)} (the broker's TLS files)")
    for key in ("ca", "cert", "key"):  # often copied in later: Mosquitto needs them at start
        if not Path(getattr(b, key)).is_file():
            print(f"ecoin-gateway: warning: gateway.broker.{key} {getattr(b, key)} is not here yet")


def cmd_broker_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _check_broker_table(cfg.broker)
    try:
        paths = brokerconf.generate(cfg.broker, args.out)
    except ValueError as exc:  # the [gateway.broker] table cannot make a safe broker
        raise ConfigError(f"gateway.broker: {exc}") from None
    log.info("broker_config_written", extra={k: str(v) for k, v in paths.items()})
    print(
        f"wrote {paths['conf']}; device passwords in {paths['credentials']} (0600); each gateway's"
        f" and analyst's broker password in {paths['secrets']}/<name>.password, to copy to its host"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.dispatch(
        "ecoin-gateway",
        parser(),
        argv,
        usage=(ConfigError,),
        runtime=(QueueError, LinkError, TopupError, OSError),
    )


if __name__ == "__main__":
    raise SystemExit(main())

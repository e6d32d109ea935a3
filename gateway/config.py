"""The gateway's TOML configuration (docs/GATEWAY.md has an annotated example).

Everything lives in a ``[gateway]`` table (``[gateway.edge]``, ``[[gateway.serial]]``, ...),
as the bank's and the analysts' settings live in theirs, so one file may hold them all.
Relative paths are taken from the configuration file's directory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoin.common import config as cfg
from ecoin.common import names, topics
from ecoin.protocol import wire

# Client ids of the services (gateway links, analysts) start with this; Mosquitto shares ids
# across listeners and binds a device's to its user name, so no device may be named so.
SERVICE_CLIENT_PREFIX = topics.CLIENT_PREFIX


@dataclass(frozen=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca: str = ""  # the project CA; with cert and key the gateway logs in by certificate
    cert: str = ""
    key: str = ""
    # On the generated broker's service listener the gateway logs in with the certificate AND
    # its password (``credentials.toml`` [services] of ``broker-config``); the user name is
    # then the link's client id. ``username``/``password``: a broker without that scheme.
    password_file: str = ""
    username: str = ""
    password: str = ""
    keepalive: int = 30


@dataclass(frozen=True)
class Bank:
    url: str = ""  # https://host:port; empty: top-ups are answered FAILED
    ca: str = ""
    cert: str = ""
    key: str = ""
    timeout_s: float = 10.0
    workers: int = 4  # concurrent top-ups; more outstanding ones are answered FAILED


@dataclass(frozen=True)
class Queue:
    path: str = "/var/lib/ecoin-gateway/queue.sqlite"
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 24 * 3600.0
    replay_rate: float = 200.0  # operations per second when a backlog is replayed
    replay_burst: int = 50


@dataclass(frozen=True)
class Limits:
    rate_per_s: float = 5.0  # per device
    burst: int = 20
    frame_max: int = wire.FRAME_MAX
    window: int = 256  # operations in flight upstream (lowered to the broker's receive maximum)


@dataclass(frozen=True)
class Health:
    host: str = "127.0.0.1"
    port: int = 9102  # 0: no health server


@dataclass(frozen=True)
class SerialPort:
    device_id: str
    path: str  # prefer /dev/serial/by-id/...: stable across replugging
    baud: int = 115200


@dataclass(frozen=True)
class BrokerConf:
    """Input of ``ecoin-gateway broker-config`` (the Mosquitto configuration generator)."""

    out_dir: str = "/etc/mosquitto/conf.d/ecoin"
    ca: str = ""
    cert: str = ""  # the broker's certificate (role broker)
    key: str = ""
    bind: str = "0.0.0.0"
    device_port: int = 8883  # TLS, username + password (one credential per device)
    # False only for the simulator on loopback: the MicroPython unix port has no ssl module.
    device_tls: bool = True
    service_port: int = 8884  # TLS, client certificate and password (analysts, gateways)
    devices: list[str] = field(default_factory=list)
    analysts: dict[str, list[str]] = field(default_factory=dict)  # analyst -> the services it offers
    # analyst -> its processes' ``instance`` ids (each has its own MQTT sessions); default ["1"]
    instances: dict[str, list[str]] = field(default_factory=dict)
    gateways: list[str] = field(default_factory=list)
    max_inflight: int = 100


@dataclass(frozen=True)
class Config:
    gateway_id: str = "gw1"
    op_timeout_s: float = 30.0
    log_level: str = "info"
    backoff_min_s: float = 0.5
    backoff_max_s: float = 2.0  # a broker back after a restart is found within seconds
    edge: Broker = field(default_factory=Broker)
    upstream: Broker = field(default_factory=Broker)
    bank: Bank = field(default_factory=Bank)
    queue: Queue = field(default_factory=Queue)
    limits: Limits = field(default_factory=Limits)
    health: Health = field(default_factory=Health)
    serial: list[SerialPort] = field(default_factory=list)
    broker: BrokerConf = field(default_factory=BrokerConf)


SECTION = "gateway"
# Keys holding file paths (``table.key``): resolved against the configuration file's directory.
_PATHS = (
    *(f"{table}.{key}" for table in ("edge", "upstream", "bank") for key in ("ca", "cert", "key")),
    *(f"{table}.password_file" for table in ("edge", "upstream")),
    "queue.path",
    *(f"broker.{key}" for key in ("out_dir", "ca", "cert", "key")),
)


def from_table(table: dict[str, Any], where: str = SECTION) -> Config:
    """The settings of one ``[gateway]`` table (already read, paths as given), checked."""
    config = cfg.build(Config, table, where)
    check(config)
    return config


def load(path: str | Path) -> Config:
    """Reads the ``[gateway]`` table of a TOML file; relative paths are taken from the file's
    directory (so a configuration directory can be moved whole)."""
    return cfg.load_section(Config, path, SECTION, _PATHS, check)


def _name(value: str, where: str, service: bool = False) -> None:
    """An id (gateway, analyst, device...) or a service name: it becomes a broker user name,
    a client id and a topic level, so only the protocol's alphabet (PROTOCOL.md 2)."""
    ok, rule = (names.is_service, names.SERVICE_RULE) if service else (names.is_id, names.ID_RULE)
    if not (isinstance(value, str) and ok(value)):
        raise cfg.ConfigError(f"gateway config: {where} {value!r} is not {rule}")


def check(c: Config) -> None:
    _name(c.gateway_id, "gateway_id")
    seen: set[str] = set()
    for port in c.serial:
        _name(port.device_id, "serial: device id")
        if port.device_id in seen:
            raise cfg.ConfigError(f"gateway config: serial device id {port.device_id} appears twice")
        seen.add(port.device_id)
    for device in c.broker.devices:
        _name(device, "broker.devices: device id")
        if device.startswith(SERVICE_CLIENT_PREFIX):
            raise cfg.ConfigError(
                f"gateway config: device id {device}: {SERVICE_CLIENT_PREFIX}* are the services' client ids"
            )
    for gateway in c.broker.gateways:
        _name(gateway, "broker.gateways: gateway id")
    for analyst, services in c.broker.analysts.items():
        _name(analyst, "broker.analysts: analyst")
        for service in services:
            _name(service, f"broker.analysts.{analyst}: service", service=True)
    _check_instances(c.broker)
    empty = sorted(a for a, services in c.broker.analysts.items() if not services)
    if empty:
        raise cfg.ConfigError(f"gateway config: broker.analysts: list the services of {', '.join(empty)}")
    if not c.broker.device_tls and not _loopback(c.broker.bind):
        raise cfg.ConfigError("gateway config: broker.device_tls = false is for a loopback bind only")
    if c.op_timeout_s <= 0 or c.limits.rate_per_s <= 0 or c.queue.replay_rate <= 0:
        raise cfg.ConfigError("gateway config: timeouts and rates must be > 0")
    if not 0 < c.limits.frame_max <= wire.FRAME_MAX:
        raise cfg.ConfigError(f"gateway config: limits.frame_max must be 1 to {wire.FRAME_MAX}")


def _check_instances(b: BrokerConf) -> None:
    for analyst, instances in b.instances.items():
        if analyst not in b.analysts:
            raise cfg.ConfigError(f"gateway config: broker.instances: {analyst} is not in broker.analysts")
        if not isinstance(instances, list) or not instances:
            raise cfg.ConfigError(f"gateway config: broker.instances.{analyst}: a list of instance ids")
        for instance in instances:  # analyst instances use the id alphabet (analyst/settings.py)
            _name(instance, f"broker.instances.{analyst}: instance")


def _loopback(host: str) -> bool:
    """True only for a loopback address literal (a name like 127.evil.example is not one)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

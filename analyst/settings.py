"""The analyst's TOML configuration (an ``[analyst]`` table).

    [analyst]
    id = "alice"                 # analyst id = the CN of our certificate = the bank account
    instance = "1"               # tells apart several processes of one analyst (MQTT session)
    services = ["average", "stats"]
    pki = "/etc/ecoin/pki"       # cert/key default to pki/analyst/<id>.crt|.key, ca to pki/ca.crt
    metrics_port = 9310          # plain-HTTP /metrics and /healthz on metrics_listen; 0: off

    [analyst.broker]
    host = "broker.example"
    port = 8884
    tls = true                   # false only for tests on loopback
    password_file = "/etc/ecoin/alice.mqtt-password"   # broker-config's secrets/alice.password

    [analyst.bank]
    url = "https://bank.example:8443"
    batch_max = 64

    [analyst.limits]
    workers = 2                  # analyser processes; -1: one per CPU
    analysis_timeout_s = 2.0

    [analyst.options.anomaly]    # options of one analyser
    k = 2.5

    [analyst.offers.stats]       # what one service costs and says about itself (ANALYSTS.md)
    price = 3                    # coins per operation, 1 to 4 (default 1)
    description = "mean, min, max and spread"   # default: the analyser's own
    version = "2.1"              # default "1"

Relative paths are taken from the configuration file's directory; a missing table, an
unknown key or a wrong value is a ``ConfigError`` (``ecoin-analyst`` exits 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoin.common import config, topics
from ecoin.common.bank_client import BadUrl, split_url
from ecoin.common.config import ConfigError
from ecoin.protocol import wire


@dataclass(frozen=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 8884
    tls: bool = True
    # With TLS, each connection logs in with the certificate AND this password (the broker's
    # ``secrets/<id>.password``), its client id as the user name: the broker binds the id to it.
    password_file: str = ""
    keepalive_s: int = 30
    # Operations the broker may hand us before we acknowledge one (MQTT 5 Receive Maximum).
    # We acknowledge only once the reply is safely at the broker, so this is our pipeline depth.
    receive_maximum: int = 256
    # The broker keeps our session (subscription and unacknowledged operations) this long
    # after a crash, so a restarted process answers what its predecessor had taken.
    session_expiry_s: int = 3600
    max_packet: int = 65536  # larger messages are dropped by the broker, unread by us
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class Bank:
    url: str = "https://127.0.0.1:8443"
    batch_max: int = 64  # headers per redeem call (the bank takes up to 256)
    linger_ms: float = 1.0  # how long a batch waits for company when the queue is empty
    wait_max_s: float = 30.0  # how long an operation waits for an unreachable bank
    timeout_s: float = 10.0
    connections: int = 2  # a batch need not wait for the call in flight (docs/ANALYSTS.md)


@dataclass(frozen=True)
class Limits:
    workers: int = -1  # analyser processes; -1: one per CPU
    analysis_timeout_s: float = 2.0
    max_input_bytes: int = wire.PAYLOAD_MAX  # decrypted readings larger than this are refused
    memory_mb: int = 512  # address-space limit of each worker; 0: none
    threads: int = 0  # threads that decrypt, call workers and reply; 0: workers + 2
    dedupe: int = 100_000  # operations remembered to answer a redelivery once
    drain_s: float = 10.0  # on shutdown, how long operations in flight may take to finish


@dataclass(frozen=True)
class Offer:
    """A service's terms, announced with it (PROTOCOL.md 7.1) and stated to the bank."""

    price: int = 1  # coins per operation: the header must hold this many (1 to 4)
    description: str = ""  # "" means the analyser's own description
    version: str = "1"


OFFER_KEYS = {"price": int, "description": str, "version": str}
DESCRIPTION_MAX = 200
VERSION_MAX = 32


@dataclass(frozen=True)
class Settings:
    id: str = ""
    instance: str = topics.DEFAULT_INSTANCE
    services: list[str] = field(default_factory=list)
    pki: str = ""
    cert: str = ""
    key: str = ""
    ca: str = ""
    log_level: str = "info"
    metrics_listen: str = "127.0.0.1"
    metrics_port: int = 9310
    announce_every_s: float = 5.0  # retained announcement refreshed this often (see ANALYSTS.md)
    broker: Broker = field(default_factory=Broker)
    bank: Bank = field(default_factory=Bank)
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict)  # analyser name -> {option: value}
    offers: dict[str, Any] = field(default_factory=dict)  # service -> {price, description, version}

    def offer(self, service: str) -> Offer:
        return Offer(**self.offers.get(service, {}))

    def tls_paths(self) -> tuple[str, str, str]:
        pki = Path(self.pki) if self.pki else None
        default = (pki / "analyst" / self.id) if pki else None
        cert = self.cert or (f"{default}.crt" if default else "")
        key = self.key or (f"{default}.key" if default else "")
        ca = self.ca or (str(pki / "ca.crt") if pki else "")
        return cert, key, ca

    def worker_count(self) -> int:
        return max(1, os.cpu_count() or 1) if self.limits.workers < 0 else self.limits.workers

    def thread_count(self) -> int:
        return self.limits.threads or self.worker_count() + 2

    def client_id(self, service: str) -> str:
        """Stable across restarts, so the broker hands a restarted process its old session;
        also the user name of that connection on the broker's service listener."""
        return topics.analyst_client(self.id, self.instance, service)

    def broker_password(self) -> str | None:
        path = self.broker.password_file
        return Path(path).read_text().strip() if path else None


def check(s: Settings) -> Settings:
    """Raises ConfigError for values that cannot work."""
    try:
        wire.device_id(s.id)  # analyst ids use the device-id alphabet
        wire.device_id(s.instance)
        for service in s.services:
            wire.service_name(service)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"analyst: {exc}") from None
    try:
        split_url(s.bank.url)
    except BadUrl as exc:
        raise ConfigError(f"analyst.bank.url: {exc}") from None
    if not s.services:
        raise ConfigError("analyst.services: offer at least one service")
    if len(set(s.services)) != len(s.services):
        raise ConfigError("analyst.services: a service is listed twice")
    if not 1 <= s.bank.batch_max <= 256:
        raise ConfigError("analyst.bank.batch_max: must be 1 to 256")
    if s.bank.connections < 1 or s.limits.analysis_timeout_s <= 0 or s.broker.receive_maximum < 1:
        raise ConfigError(
            "analyst: bank.connections, broker.receive_maximum and the time limit must be positive"
        )
    if not 0 < s.limits.max_input_bytes <= wire.PAYLOAD_MAX:
        raise ConfigError(f"analyst.limits.max_input_bytes: must be 1 to {wire.PAYLOAD_MAX}")
    if not all(isinstance(v, dict) for v in s.options.values()):
        raise ConfigError("analyst.options: one table per analyser, e.g. [analyst.options.anomaly]")
    for service, table in s.offers.items():
        _check_offer(s, service, table)
    cert, key, ca = s.tls_paths()
    if not (cert and key and ca):
        raise ConfigError("analyst: set pki (or cert, key and ca): the bank needs our certificate")
    if s.broker.tls and not s.broker.password_file:
        raise ConfigError(
            "analyst.broker.password_file: the broker's service listener wants our password too"
            f" (`ecoin-gateway broker-config` writes it to secrets/{s.id}.password)"
        )
    return s


def _check_offer(s: Settings, service: str, table: Any) -> None:
    where = f"analyst.offers.{service}"
    if service not in s.services:
        raise ConfigError(f"{where}: {service} is not in analyst.services")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of price, description and version")
    for key, value in table.items():
        want = OFFER_KEYS.get(key)
        if want is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: price, description, version)")
        if type(value) is not want:
            raise ConfigError(f"{where}.{key}: must be {'an integer' if want is int else 'a string'}")
    o = Offer(**table)
    if not 1 <= o.price <= wire.HEADER_COINS_MAX:
        raise ConfigError(f"{where}.price: must be 1 to {wire.HEADER_COINS_MAX} coins (what a header holds)")
    if len(o.description) > DESCRIPTION_MAX or not 0 < len(o.version) <= VERSION_MAX:
        raise ConfigError(f"{where}: description up to {DESCRIPTION_MAX} characters, version 1 to 32")


def load(path: str | Path) -> Settings:
    """The ``[analyst]`` table of ``path``, relative paths resolved against the file, checked."""
    paths = ("pki", "cert", "key", "ca", "broker.password_file")
    return config.load_section(Settings, path, "analyst", paths, check)

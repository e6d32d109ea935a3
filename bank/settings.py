"""The bank's TOML configuration (``[bank]`` table) and the objects built from it.

    [bank]
    listen = "0.0.0.0"          # API address (mutual TLS)
    port = 8443
    metrics_port = 9443         # plain-HTTP /metrics and /healthz on metrics_listen; 0: off
    db = "/var/lib/ecoin/bank.sqlite3"   # or "postgresql://user@host:5432/ecoin"
    pki = "/etc/ecoin/pki"      # ca.crt, bank/<name>.crt|.key, coin/*.key
    master_key = "/var/lib/ecoin/master.key"
    coin_expiry_days = 730
    # Limits of the API (docs/BANK_API.md, "Limits"); the defaults suit a production bank.
    max_connections = 512       # open connections, handshaking ones included
    max_connections_per_client = 32
    requests_per_client = 4     # requests of one caller worked on at once; the rest wait
    handshake_timeout_s = 10.0
    idle_timeout_s = 15.0       # connect or last answer -> a complete header block
    body_timeout_s = 10.0

Relative paths are taken from the configuration file's directory. ``load`` refuses a file
without a ``[bank]`` table, unknown keys, wrong types and values out of range
(``ConfigError``: ``ecoin-bank`` exits 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ecoin.common import config
from ecoin.common.config import ConfigError

from .postgres import PostgresStore
from .sqlite import SqliteStore
from .store import Store


@dataclass(frozen=True)
class BankSettings:
    listen: str = "127.0.0.1"
    port: int = 8443
    metrics_listen: str = "127.0.0.1"
    metrics_port: int = 9443
    db: str = "bank.sqlite3"
    pki: str = "pki"
    name: str = "bank"  # our certificate: pki/bank/<name>.crt and .key
    cert: str = ""  # explicit paths override the PKI layout
    key: str = ""
    ca: str = ""
    master_key: str = "master.key"
    coin_expiry_days: int = 730
    expire_every_s: int = 3600  # the background expiry job; 0: only `ecoin-bank expire`
    workers: int = -1  # RSA worker processes: -1 one per CPU, 0 decrypt in the request thread
    db_pool: int = 8  # PostgreSQL connections per bank process
    busy_timeout_ms: int = 5000  # SQLite: how long a writer waits for another process
    log_level: str = "info"
    max_connections: int = 512
    max_connections_per_client: int = 32
    requests_per_client: int = 4
    threads: int = 16  # request threads: the ledger's SQL and the wait for the RSA workers
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 15.0
    body_timeout_s: float = 10.0

    @property
    def postgres(self) -> bool:
        return self.db.startswith(("postgresql://", "postgres://"))

    def tls_paths(self) -> tuple[str, str, str]:
        pki = Path(self.pki)
        return (
            self.cert or str(pki / "bank" / f"{self.name}.crt"),
            self.key or str(pki / "bank" / f"{self.name}.key"),
            self.ca or str(pki / "ca.crt"),
        )

    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers < 0 else self.workers


_POSITIVE = (
    "max_connections",
    "max_connections_per_client",
    "requests_per_client",
    "threads",
    "db_pool",
    "handshake_timeout_s",
    "idle_timeout_s",
    "body_timeout_s",
)


_PATHS = ("pki", "cert", "key", "ca", "master_key", "db")  # db: unless a postgresql:// URL


def check(s: BankSettings) -> BankSettings:
    """Refuses values the bank cannot run with, naming the key."""
    for name in ("port", "metrics_port"):
        if not 0 <= getattr(s, name) <= 65535:
            raise ConfigError(f"bank.{name}: must be 0 to 65535")
    for name in _POSITIVE:
        if getattr(s, name) <= 0:
            raise ConfigError(f"bank.{name}: must be > 0")
    if s.workers < -1:
        raise ConfigError("bank.workers: -1 (one per CPU), 0 (none) or a number of processes")
    if s.coin_expiry_days < 0 or s.expire_every_s < 0:
        raise ConfigError("bank.coin_expiry_days and bank.expire_every_s: must be >= 0")
    if "://" in s.db and not s.postgres:  # it would become a SQLite file of that name
        raise ConfigError(f"bank.db: a SQLite file or a postgresql:// URL, not {s.db.split('://')[0]}://")
    return s


def load(path: str | Path) -> BankSettings:
    """The settings of the ``[bank]`` table of ``path``, relative paths resolved, checked."""
    return config.load_section(BankSettings, path, "bank", _PATHS, check)


def open_store(settings: BankSettings) -> Store:
    if settings.postgres:
        return PostgresStore(settings.db, pool_size=settings.db_pool)
    return SqliteStore(settings.db, busy_timeout_ms=settings.busy_timeout_ms)

"""The bank's TOML configuration (``[bank]`` table) and the objects built from it.

    [bank]
    listen = "0.0.0.0"          # API address (mutual TLS)
    port = 8443
    metrics_port = 9443         # plain-HTTP /metrics and /healthz on metrics_listen; 0: off
    db = "/var/lib/ecoin/bank.sqlite3"   # or "postgresql://user@host:5432/ecoin"
    pki = "/etc/ecoin/pki"      # ca.crt, bank/<name>.crt|.key, coin/*.key
    master_key = "/var/lib/ecoin/master.key"
    coin_expiry_days = 730

Relative paths are taken from the configuration file's directory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecoin.common import config

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


def load(path: str | Path | None) -> BankSettings:
    settings = config.load(BankSettings, path, "bank")
    if path is None:
        return settings
    base = Path(path).resolve().parent
    fixed: dict[str, Any] = {}
    for name in ("pki", "cert", "key", "ca", "master_key", "db"):
        value = getattr(settings, name)
        if name == "db" and settings.postgres:
            continue
        if value and not Path(value).is_absolute():
            fixed[name] = str(base / value)
    return dataclasses.replace(settings, **fixed)


def open_store(settings: BankSettings) -> Store:
    if settings.postgres:
        return PostgresStore(settings.db, pool_size=settings.db_pool)
    return SqliteStore(settings.db, busy_timeout_ms=settings.busy_timeout_ms)

"""The dashboard's TOML configuration (``[dashboard]`` table, docs/DASHBOARD.md).

    [dashboard]
    listen = "127.0.0.1"              # plain HTTP: put a TLS proxy in front to leave loopback
    port = 8080
    bank = "https://bank.lan:8443"    # the bank's API, over mutual TLS
    pki = "/etc/ecoin/pki"            # ca.crt and dashboard/<name>.crt|.key (role dashboard)
    users = "users.toml"              # who may log in (ecoin-dashboard user add)
    session_key = "session.key"       # 32 bytes, 0600, made on first start
    refresh_s = 5.0                   # how often an open page refreshes its figures
    login_failures = 5                # failed logins per user name within login_window_s,
    login_window_s = 900.0            # then 429 until the oldest ages out
    [dashboard.health]                # the operator's live status: name = a /healthz URL
    "analyst alice" = "http://127.0.0.1:9101/healthz"
    "gateway gw1" = "http://gw1.lan:9102/healthz"

Relative paths are taken from the file's directory; a missing table, an unknown key or a
wrong type is a ``ConfigError`` (``ecoin-dashboard`` exits 2), as for every ecoin command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ecoin.common import config
from ecoin.common.bank_client import BadUrl, split_url
from ecoin.common.config import ConfigError


@dataclass(frozen=True)
class DashboardSettings:
    listen: str = "127.0.0.1"
    port: int = 8080
    bank: str = "https://127.0.0.1:8443"
    pki: str = "pki"
    name: str = "dashboard"  # our certificate: pki/dashboard/<name>.crt and .key
    cert: str = ""  # explicit paths override the PKI layout
    key: str = ""
    ca: str = ""
    users: str = "users.toml"
    session_key: str = "session.key"
    session_hours: float = 12.0
    secure_cookies: bool = False  # true behind an HTTPS proxy: the browser sends them over TLS only
    refresh_s: float = 5.0
    health_timeout_s: float = 1.0
    login_failures: int = 5
    login_window_s: float = 900.0
    log_level: str = "info"
    health: dict[str, str] = field(default_factory=dict)

    def tls_paths(self) -> tuple[str, str, str]:
        pki = Path(self.pki)
        return (
            self.cert or str(pki / "dashboard" / f"{self.name}.crt"),
            self.key or str(pki / "dashboard" / f"{self.name}.key"),
            self.ca or str(pki / "ca.crt"),
        )


_PATHS = ("pki", "cert", "key", "ca", "users", "session_key")


def check(s: DashboardSettings) -> DashboardSettings:
    if not 0 <= s.port <= 65535:
        raise ConfigError("dashboard.port: must be 0 to 65535")
    try:
        split_url(s.bank)
    except BadUrl as exc:
        raise ConfigError(f"dashboard.bank: {exc}") from None
    if s.login_failures < 1:
        raise ConfigError("dashboard.login_failures: must be >= 1")
    for name in ("session_hours", "refresh_s", "health_timeout_s", "login_window_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"dashboard.{name}: must be > 0")
    for label, url in s.health.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"dashboard.health.{label}: an http(s):// URL of a /healthz")
    return s


def load(path: str | Path) -> DashboardSettings:
    """The ``[dashboard]`` table of ``path``, relative paths resolved against the file, checked."""
    return config.load_section(DashboardSettings, path, "dashboard", _PATHS, check)

"""Who may log in to the dashboard: a TOML file of users, each an owner (an owner account
at the bank, same name) or an operator, with a scrypt hash of their password.

    [users.olive]
    role = "owner"
    password = "scrypt$16384$8$1$<salt, base64>$<hash, base64>"

``ecoin-dashboard user add NAME --role owner`` writes an entry (the password is read from
a file or stdin, never from the command line). scrypt (hashlib, OpenSSL's) is memory-hard,
so a stolen file costs a guesser dearly; the comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ecoin.common import files, names
from ecoin.common.config import ConfigError

ROLES = ("owner", "operator")
N, R, P = 16384, 8, 1
PASSWORD_MIN = 8


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: str  # the scrypt record, never the password


def hash_password(password: str, salt: bytes | None = None, n: int = N, r: int = R, p: int = P) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    enc = base64.b64encode
    return f"scrypt${n}${r}${p}${enc(salt).decode()}${enc(digest).decode()}"


def check_password(record: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = record.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def load(path: str | Path) -> dict[str, User]:
    """The users file; an absent file is no users (nobody can log in yet)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the users file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out = {}
    for name, entry in data.get("users", {}).items():
        if not names.is_id(name) or not isinstance(entry, dict):
            raise ConfigError(f"{path}: users.{name}: a name of {names.ID_RULE} with a table")
        role, record = entry.get("role"), entry.get("password")
        if role not in ROLES or not isinstance(record, str):
            raise ConfigError(f"{path}: users.{name}: role must be owner or operator, with a password")
        out[name] = User(name, role, record)
    return out


def add(path: str | Path, name: str, role: str, password: str) -> None:
    """Adds or replaces a user (the file is rewritten atomically, 0600)."""
    if not names.is_id(name):
        raise ConfigError(f"user name: {names.ID_RULE}")
    if role not in ROLES:
        raise ConfigError("role: owner or operator")
    if len(password) < PASSWORD_MIN:
        raise ConfigError(f"the password must be at least {PASSWORD_MIN} characters")
    users = load(path)
    users[name] = User(name, role, hash_password(password))
    table = {"users": {u.name: {"role": u.role, "password": u.password} for u in users.values()}}
    files.write_atomic(Path(path), tomli_w.dumps(table), 0o600)

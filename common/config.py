"""TOML configuration shared by the console scripts.

Each service describes its settings as a frozen dataclass with defaults; ``load`` reads a
TOML table into it and rejects unknown keys and wrong types with a clear message.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or has a wrong key or value."""


def read(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def build(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Builds dataclass ``cls`` from ``table``; nested dataclass fields take nested tables."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a table")
            values[name] = build(hint, value, f"{where}.{name}")  # type: ignore[arg-type]
            continue
        base = typing.get_origin(hint) or hint
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(base, type) and not isinstance(value, base):
            raise ConfigError(f"{where}.{name}: expected {base.__name__}, got {type(value).__name__}")
        values[name] = value
    return cls(**values)


def load(cls: type[T], path: str | Path | None, section: str | None = None) -> T:
    """Loads ``cls`` from the file (or from its defaults when path is None)."""
    table: dict[str, Any] = read(path) if path else {}
    if section:
        table = table.get(section, {})
    return build(cls, table, section or str(path))

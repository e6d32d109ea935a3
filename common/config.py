"""TOML configuration shared by the console scripts.

Each service describes its settings as a frozen dataclass with defaults and keeps them in
its own ``[table]`` (``[bank]``, ``[gateway]``, ...), so one file may hold them all.
``load_section`` is the one way a service reads its table: it rejects a missing table,
unknown keys, missing required keys and wrong types with a message naming the file and the
key, takes relative paths from the file's directory (so a configuration directory can be
moved whole) and checks ``log_level``. Every such error is a ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or has a wrong key or value."""


def read(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:  # a directory, no permission...: the file's fault, not a runtime one
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML file (TOML is UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def build(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Builds dataclass ``cls`` from ``table``; a nested dataclass field takes a nested table,
    a ``list[<dataclass>]`` field an array of tables (``[[where.name]]``)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = [n for n, f in fields.items() if n not in table and _required(f)]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**{name: _value(hints[name], value, f"{where}.{name}") for name, value in table.items()})


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _value(hint: Any, value: Any, where: str) -> Any:
    """One key's value, checked against its annotation (the items of an array or table too)."""
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return build(hint, value, where)  # type: ignore[arg-type]
    base = typing.get_origin(hint) or hint
    if base is list and (args := typing.get_args(hint)) and dataclasses.is_dataclass(args[0]):
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise ConfigError(f"{where}: expected an array of tables ([[{where}]])")
        return [build(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]  # type: ignore[arg-type]
    if base is list and (args := typing.get_args(hint)):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array, got {type(value).__name__}")
        return [_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if base is dict and (args := typing.get_args(hint)):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}  # TOML keys are str
    if base in (int, float) and isinstance(value, bool):  # a bool is an int to Python, not to TOML
        raise ConfigError(f"{where}: expected {base.__name__}, got bool")
    if base is float and isinstance(value, int):
        return float(value)
    if isinstance(base, type) and not isinstance(value, base):
        raise ConfigError(f"{where}: expected {base.__name__}, got {type(value).__name__}")
    return value


def resolve_paths(settings: T, base: Path, paths: Iterable[str]) -> T:
    """``settings`` with each relative path among ``paths`` (field names, ``table.key`` for a
    nested table) taken from ``base``. Empty values, URLs (``postgresql://...``) and SQLite's
    ``:memory:`` are not files and stay as they are."""
    fixed: dict[str, Any] = {}
    nested: dict[str, list[str]] = {}
    for name in paths:
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, []).append(rest)
            continue
        value = getattr(settings, name)
        if value and value != ":memory:" and "://" not in value and not Path(value).is_absolute():
            fixed[name] = str(base / value)
    for head, keys in nested.items():
        fixed[head] = resolve_paths(getattr(settings, head), base, keys)
    return dataclasses.replace(settings, **fixed)  # type: ignore[type-var]


def table_of(cls: type, document: dict[str, Any], path: str | Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table; if it is missing, says which of its keys stand outside it."""
    table = document.get(section)
    if isinstance(table, dict):
        return table
    names = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(k for k in document if k in names)
    hint = f" (found {', '.join(stray)} outside it)" if stray else ""
    raise ConfigError(f"{path}: no [{section}] table{hint}; the {section}'s settings live in one")


def check_log_level(level: str, where: str) -> None:
    if level.lower() not in LOG_LEVELS:
        raise ConfigError(f"{where}.log_level: {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}")


def load_section(
    cls: type[T],
    path: str | Path,
    section: str,
    paths: Iterable[str] = (),
    check: Callable[[T], object] | None = None,
) -> T:
    """The ``[section]`` table of ``path`` as a ``cls``: built, ``log_level`` checked, the
    relative ``paths`` (see ``resolve_paths``) taken from the file's directory, then passed to
    the service's own ``check``. Every error names the file, then the key."""
    table = table_of(cls, read(path), path, section)
    try:
        settings = build(cls, table, section)
        check_log_level(getattr(settings, "log_level", "info"), section)
        settings = resolve_paths(settings, Path(path).resolve().parent, paths)
        if check is not None:
            check(settings)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings

"""``common.config.load_section``: the one way every service reads its ``[table]``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ecoin.analyst import settings as analyst_settings
from ecoin.bank import settings as bank_settings
from ecoin.common.config import ConfigError, load_section
from ecoin.dashboard import settings as dashboard_settings
from ecoin.gateway import config as gateway_config

LOADERS: dict[str, Callable[[Path], Any]] = {
    "bank": bank_settings.load,
    "dashboard": dashboard_settings.load,
    "analyst": analyst_settings.load,
    "gateway": gateway_config.load,
}


@dataclass(frozen=True)
class Port:
    name: str
    path: str = ""


@dataclass(frozen=True)
class Store:
    path: str = "store.db"
    url: str = ""


@dataclass(frozen=True)
class Demo:
    key: str = "demo.key"
    log_level: str = "info"
    port: int = 1
    rate: float = 1.0
    names: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    store: Store = field(default_factory=Store)
    ports: list[Port] = field(default_factory=list)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "demo.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_of_top_level_and_nested_keys_are_the_files(tmp_path: Path) -> None:
    path = write(tmp_path, '[demo]\nkey = "keys/a.key"\n[demo.store]\nurl = "x"\n')
    s = load_section(Demo, path, "demo", ("key", "store.path", "store.url"))
    etc = tmp_path / "etc"
    assert (s.key, s.store.path, s.store.url) == (
        str(etc / "keys/a.key"),
        str(etc / "store.db"),
        str(etc / "x"),
    )


@pytest.mark.parametrize("kept", ["/abs/a.key", ":memory:", "postgresql://u@h:5432/db", ""])
def test_absolute_paths_urls_memory_and_empty_values_stay(tmp_path: Path, kept: str) -> None:
    s = load_section(Demo, write(tmp_path, f'[demo]\nkey = "{kept}"\n'), "demo", ("key",))
    assert s.key == kept


def test_an_array_of_tables_builds_each_entry_and_names_a_missing_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[[demo.ports]]\nname = "a"\n[[demo.ports]]\nname = "b"\npath = "/dev/b"\n')
    assert load_section(Demo, path, "demo").ports == [Port("a"), Port("b", "/dev/b")]
    path = write(tmp_path, '[[demo.ports]]\nname = "a"\n[[demo.ports]]\npath = "/dev/b"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: demo.ports[1]: missing key(s) name")):
        load_section(Demo, path, "demo")
    path = write(tmp_path, '[demo]\nports = ["a"]\n')
    with pytest.raises(
        ConfigError, match=re.escape("demo.ports: expected an array of tables ([[demo.ports]])")
    ):
        load_section(Demo, path, "demo")


def test_every_error_names_the_file_then_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[demo.store]\npath = 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: demo.store.path: expected str, got int")):
        load_section(Demo, path, "demo")

    def refuse(s: Demo) -> None:
        raise ConfigError("demo.key: not this one")

    path = write(tmp_path, "[demo]\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: demo.key: not this one")):
        load_section(Demo, path, "demo", check=refuse)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("port = true", "demo.port: expected int, got bool"),  # Python's bool is an int; TOML's is not
        ("rate = false", "demo.rate: expected float, got bool"),
        ('names = "ab"', "demo.names: expected an array, got str"),  # not one name per character
        ('names = ["a", 2]', "demo.names[1]: expected str, got int"),
        ('groups = {a = "xy"}', "demo.groups.a: expected an array, got str"),
        ("groups = {a = [1]}", "demo.groups.a[0]: expected str, got int"),
        ('groups = ["a"]', "demo.groups: expected a table, got list"),
    ],
)
def test_values_inside_arrays_and_tables_are_checked_too(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_section(Demo, write(tmp_path, f"[demo]\n{text}\n"), "demo")
    good = '[demo]\nport = 2\nrate = 3\nnames = ["a"]\ngroups = {g = ["b"]}\n'
    s = load_section(Demo, write(tmp_path, good), "demo")
    assert (s.port, s.rate, s.names, s.groups) == (2, 3.0, ["a"], {"g": ["b"]})


def test_a_file_that_cannot_be_read_as_toml_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_bytes(b'[demo]\nkey = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not a TOML file (TOML is UTF-8 text)")):
        load_section(Demo, path, "demo")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read it: Is a directory")):
        load_section(Demo, tmp_path, "demo")


@pytest.mark.parametrize("section", sorted(LOADERS))
def test_every_service_refuses_an_unknown_log_level(tmp_path: Path, section: str) -> None:
    path = tmp_path / f"{section}.toml"
    path.write_text(f'[{section}]\nlog_level = "loud"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{section}.log_level: debug, info, warning or error")):
        LOADERS[section](path)


@pytest.mark.parametrize("section", sorted(LOADERS))
def test_every_service_wants_its_table_and_names_keys_left_outside(tmp_path: Path, section: str) -> None:
    path = tmp_path / f"{section}.toml"
    path.write_text('log_level = "info"\n[other]\nx = 1\n')
    with pytest.raises(ConfigError, match=re.escape(f"no [{section}] table (found log_level outside it)")):
        LOADERS[section](path)

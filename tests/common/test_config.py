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

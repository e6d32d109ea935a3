"""``common.cli``: every service's subcommands take ``-c/--config`` before or after their
name, from the one ``ConfigFile.commands`` parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from ecoin.analyst import cli as analyst_cli
from ecoin.bank import cli as bank_cli
from ecoin.common.cli import ConfigFile
from ecoin.dashboard import cli as dashboard_cli
from ecoin.gateway import cli as gateway_cli

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "bank": bank_cli.parser,
    "dashboard": dashboard_cli.parser,
    "analyst": analyst_cli.parser,
    "gateway": gateway_cli.parser,
}
# Commands that read no configuration file.
WITHOUT_CONFIG = {("analyst", "list")}
# Arguments a command needs besides the file.
NEEDS = {
    "account create": ["x", "--kind", "owner"],
    "account fund": ["x", "1"],
    "device add": ["x", "--owner", "o", "--key-file", "k"],
    "policy set": ["o"],
    "policy show": ["o"],
    "policy clear": ["o"],
    "statement": ["a"],
    "user add": ["x", "--role", "owner"],
}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command line (``account create``, ``serve``, ...) under ``parser``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


@pytest.mark.parametrize("role", sorted(PARSERS))
def test_every_subcommand_takes_the_file_before_or_after_its_name(role: str) -> None:
    commands = list(leaves(PARSERS[role]()))
    assert ("serve",) in commands
    for words in commands:
        rest = NEEDS.get(" ".join(words), [])
        if (role, words[0]) in WITHOUT_CONFIG:
            with pytest.raises(SystemExit):  # argparse refuses an option it does not know
                PARSERS[role]().parse_args([*words, "-c", "x.toml"])
            continue
        before = PARSERS[role]().parse_args(["-c", "a.toml", *words, *rest])
        after = PARSERS[role]().parse_args([*words, *rest, "--config", "b.toml"])
        assert (before.config, after.config) == ("a.toml", "b.toml"), words
        assert callable(before.fn) and before.fn is after.fn, words


def test_commands_groups_tell_the_action_and_keep_an_earlier_file(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ConfigFile("demo")
    cmds = config.commands("ecoin-demo", "a demo")
    group = cmds.group("thing", "things", lambda args: 0)
    group.add("make", "make one").add_argument("name")
    args = cmds.parser.parse_args(["-c", "first.toml", "thing", "make", "x"])
    assert (args.command, args.action, args.name, args.config) == ("thing", "make", "x", "first.toml")
    monkeypatch.setenv("ECOIN_DEMO_CONFIG", "/nonexistent/demo.toml")
    assert config.default == "/nonexistent/demo.toml"
    assert not hasattr(cmds.parser.parse_args(["thing", "make", "x"]), "config")

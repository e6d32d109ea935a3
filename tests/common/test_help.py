"""Every console command's ``--help`` explains every option and argument it lists."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

from ecoin.analyst import cli as analyst_cli
from ecoin.bank import cli as bank_cli
from ecoin.dashboard import cli as dashboard_cli
from ecoin.gateway import cli as gateway_cli
from ecoin.sim import cli as sim_cli
from ecoin.tools import pki, provision
from ecoin.tools.provisioning.args import parser as provision_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "ecoin-analyst": analyst_cli.parser,
    "ecoin-bank": bank_cli.parser,
    "ecoin-dashboard": dashboard_cli.parser,
    "ecoin-gateway": gateway_cli.parser,
    "ecoin-pki": pki._parser,
    "ecoin-provision": lambda: provision_parser(provision.BOARDS, provision.COMMANDS),
    "ecoin-sim": sim_cli.parser,
}


def _commands(name: str, p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _commands(f"{name} {sub}", subparser)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_and_argument_has_a_help_text(command: str) -> None:
    silent = [
        f"{name}: {'/'.join(a.option_strings) or a.dest}"
        for name, p in _commands(command, PARSERS[command]())
        for a in p._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
        and not (a.help or "").strip()
    ]
    assert silent == []


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_subcommand_describes_itself(command: str) -> None:
    assert [name for name, p in _commands(command, PARSERS[command]()) if not p.description] == []


def test_provision_offers_mpremote_and_tls_only_where_they_apply() -> None:
    """--mpremote only on the commands that talk to a board; --ca mentions --tls only on new."""
    options = {
        name: {o: a.help for a in p._actions for o in a.option_strings}
        for name, p in _commands("provision", PARSERS["ecoin-provision"]())
    }
    with_mpremote = sorted(name for name, opts in options.items() if "--mpremote" in opts)
    assert with_mpremote == ["provision flash", "provision refund", "provision status"]
    tls_text = sorted(name for name, opts in options.items() if "--tls" in (opts.get("--ca") or ""))
    assert tls_text == ["provision new"]

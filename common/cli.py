"""What every ecoin command shares: how a subcommand is dispatched and what it exits with.

Exit codes: 0 done; 1 a runtime failure (a bank, broker or board that failed us);
2 a usage or configuration error (fix the command line or the file); 130 interrupted
(Ctrl-C in the middle of a command's work). A service (``serve``, ``ecoin-sim run``) asked to
stop by SIGINT or SIGTERM has done its job: it stops cleanly, logs it and exits 0, as systemd
expects of a unit it stops. Expected errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ecoin.common.config import ConfigError

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


def dispatch(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    usage: tuple[type[BaseException], ...],
    runtime: tuple[type[BaseException], ...] = (),
    call: Callable[[argparse.Namespace], Any] | None = None,
    interrupted: str = "interrupted",
) -> int:
    """Parses argv and runs the subcommand's ``fn`` (set with ``set_defaults(fn=...)``), or
    ``call(args)`` when given; turns the expected errors into a message and an exit code."""
    args = parser.parse_args(argv)
    try:
        return int((call or args.fn)(args))
    except usage as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE
    except runtime as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return RUNTIME
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return INTERRUPTED


class ConfigFile:
    """The services' one ``-c/--config`` convention: every subcommand takes the option, before
    or after its name; without it the file is $ECOIN_<ROLE>_CONFIG, else
    /etc/ecoin/<role>.toml, read when the command runs (not at import)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.env = f"ECOIN_{role.upper()}_CONFIG"

    @property
    def default(self) -> str:
        return os.environ.get(self.env, f"/etc/ecoin/{self.role}.toml")

    def option(self) -> argparse.ArgumentParser:
        """The parent parser (``parents=[...]``) of the command and of each subcommand."""
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(
            "-c",
            "--config",
            default=argparse.SUPPRESS,  # a subcommand's parser does not reset one given before it
            help=f"TOML file with a [{self.role}] table "
            f"(default ${self.env}, else /etc/ecoin/{self.role}.toml)",
        )
        return parent

    def commands(self, prog: str, description: str) -> Commands:
        """The command's parser, ready for its subcommands, each taking this option."""
        parent = self.option()
        return Commands(argparse.ArgumentParser(prog=prog, description=description, parents=[parent]), parent)

    def path(self, args: argparse.Namespace) -> str:
        """The file to read; a ConfigError (exit 2) naming both ways to give it if it is not there."""
        path = getattr(args, "config", None) or self.default
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such configuration file (pass -c/--config or set {self.env})")
        return str(path)


class Commands:
    """A parser's subcommands (``args.command``; ``args.action`` one level down), each taking
    the ``-c/--config`` option of its ``ConfigFile`` unless added with ``config=False``, and
    each running ``args.fn`` (see ``dispatch``)."""

    def __init__(
        self, parser: argparse.ArgumentParser, parent: argparse.ArgumentParser, dest: str = "command"
    ):
        self.parser = parser
        self._parent = parent
        self._sub = parser.add_subparsers(dest=dest, required=True)

    def add(
        self, name: str, help: str, fn: Callable[..., int] | None = None, *, config: bool = True
    ) -> argparse.ArgumentParser:
        # The one line shown in the command's list heads the subcommand's own --help too.
        sub = self._sub.add_parser(
            name, help=help, description=help, parents=[self._parent] if config else []
        )
        if fn is not None:
            sub.set_defaults(fn=fn)
        return sub

    def group(self, name: str, help: str, fn: Callable[..., int]) -> Commands:
        """A subcommand with subcommands of its own (``account create``), told by ``args.action``."""
        return Commands(self.add(name, help, fn), self._parent, "action")

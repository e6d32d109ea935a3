"""What every ecoin command shares: how a subcommand is dispatched and what it exits with.

Exit codes: 0 done; 1 a runtime failure (a bank, broker or board that failed us);
2 a usage or configuration error (fix the command line or the file); 130 interrupted.
Expected errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

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

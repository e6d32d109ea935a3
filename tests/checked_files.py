"""Fails when ruff or mypy checked fewer Python files than the rooms hold.

A misconfigured path mapping makes both tools silently skip files (mypy once checked 34
of 79), so `make lint` and `make typecheck` pipe their file lists through this check.
Usage: ``ruff check --show-files ROOMS | checked_files.py ruff ROOMS`` or
``checked_files.py mypy ROOMS < linecount.txt``.
"""

import sys
from pathlib import Path


def room_modules(rooms: list[str]) -> set[str]:
    names = set()
    for room in rooms:
        for path in Path(room).rglob("*.py"):
            parts = ["ecoin", *path.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join(parts))
    return names


def checked(tool: str, text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if tool == "mypy":
            fields = line.split()
            if len(fields) == 5 and fields[4] != "total":
                names.add(fields[4])
        elif line.strip().endswith(".py"):
            rel = Path(line.strip()).resolve().relative_to(Path.cwd())
            parts = ["ecoin", *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join(parts))
    return names


def main() -> int:
    tool, rooms = sys.argv[1], sys.argv[2:]
    missing = sorted(room_modules(rooms) - checked(tool, sys.stdin.read()))
    if missing:
        print(f"{tool} did not check {len(missing)} module(s): {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{tool}: every module of {len(rooms)} rooms checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())

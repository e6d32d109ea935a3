"""The firmware's trim list, derived from the sources: which functions of the shared protocol
modules (protocol/wire.py, session.py, ucrypto.py) the device never calls, so that
firmware/start.py can delete them at boot and give their heap back.

The source of truth is the code itself: the names the firmware modules use from those
modules (``wire.x``, ``session.x``, ``cr.x``/``ucrypto.x``), closed over what every kept
function uses in turn. The tree's start.py holds an empty ``_SERVICE_SIDE``; installing the
firmware (``deploy.install_firmware``) writes this list in its place, so a function added to
the protocol modules changes no firmware file. ``python -m ecoin.tools.provisioning.trim``
prints it.
"""

from __future__ import annotations

import ast
import functools
from importlib import resources
from pathlib import Path

SHARED = ("wire", "session", "ucrypto")
ALIASES = {"wire": "wire", "session": "session", "ucrypto": "ucrypto", "cr": "ucrypto"}


def _source(room: str, name: str) -> ast.Module:
    return ast.parse(Path(str(resources.files(f"ecoin.{room}").joinpath(name))).read_text())


def _refs(node: ast.AST, module: str, local: set[str]) -> set[tuple[str, str]]:
    """(module, name) pairs that node uses: attributes of the shared modules, and bare names
    defined at module level in its own module."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ALIASES:
            out.add((ALIASES[n.value.id], n.attr))
        elif isinstance(n, ast.Name) and n.id in local:
            out.add((module, n.id))
    return out


@functools.cache  # the installed sources do not change while a process runs
def service_side() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per shared module, the functions no device code reaches, in source order."""
    defs: dict[str, dict[str, ast.AST]] = {}
    for mod in SHARED:
        tree = _source("protocol", f"{mod}.py")
        defs[mod] = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    todo: list[tuple[str, str]] = []
    fw = Path(str(resources.files("ecoin.firmware")))
    for path in sorted(fw.glob("*.py")):
        todo += _refs(ast.parse(path.read_text()), "", set())
    for mod in SHARED:  # module-level statements (constants computed at import) run anyway
        tree = _source("protocol", f"{mod}.py")
        for stmt in tree.body:
            if not isinstance(stmt, ast.FunctionDef | ast.ClassDef):
                todo += _refs(stmt, mod, set(defs[mod]))
    kept: set[tuple[str, str]] = set()
    while todo:
        ref = todo.pop()
        if ref in kept or ref[0] not in defs or ref[1] not in defs[ref[0]]:
            continue
        kept.add(ref)
        todo += _refs(defs[ref[0]][ref[1]], ref[0], set(defs[ref[0]]))
    out = []
    for mod in SHARED:
        funcs = (n for n, d in defs[mod].items() if isinstance(d, ast.FunctionDef))
        out.append((mod, tuple(n for n in funcs if (mod, n) not in kept)))
    return tuple(out)


def _assignment(tree: ast.Module) -> ast.Assign:
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_SERVICE_SIDE":
            return node
    raise LookupError("start.py has no _SERVICE_SIDE")


def start_py_list(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The list as a start.py's text has it."""
    return tuple(ast.literal_eval(_assignment(ast.parse(text)).value))


def render() -> str:
    lines = ["_SERVICE_SIDE = ("]
    lines += [f"    ({mod!r}, {names!r})," for mod, names in service_side()]
    return "\n".join([*lines, ")"])


def with_list(text: str) -> str:
    """start.py's text with the derived list in place of its ``_SERVICE_SIDE``."""
    node = _assignment(ast.parse(text))
    lines = text.splitlines(keepends=True)
    end = node.end_lineno or node.lineno
    return "".join([*lines[: node.lineno - 1], render() + "\n", *lines[end:]])


def main() -> None:
    print(render())


if __name__ == "__main__":
    main()

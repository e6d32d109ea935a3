"""The firmware's trim list, derived from the sources: which functions of the shared protocol
modules (protocol/wire.py, session.py, ucrypto.py) the device never calls, and the copy of
those modules that a board gets without them.

The source of truth is the code itself: the names the firmware modules use from those
modules (``wire.x``, ``session.x``, ``cr.x``/``ucrypto.x``), closed over what every kept
function uses in turn. Installing the firmware (``deploy.install_firmware``) compiles
``trimmed(module)`` instead of the module: the same text with each service-side function's
lines blanked, line for line (compiled with line numbers, it gives the source's). The
one source stays protocol/*.py (CPython runs it whole), and a function added there changes
no firmware file. ``python -m ecoin.tools.provisioning.trim`` prints the list.
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


def trimmed(module: str) -> str:
    """protocol/<module>.py as a board gets it: the service side's lines blanked."""
    path = Path(str(resources.files("ecoin.protocol").joinpath(f"{module}.py")))
    text = path.read_text()
    drop = set(dict(service_side())[module])
    lines = text.splitlines(keepends=True)
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name in drop:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            for i in range(first - 1, node.end_lineno or node.lineno):
                lines[i] = "\n"
    return "".join(lines)


def render() -> str:
    lines = ["service side, blanked in the device's copy:"]
    lines += [f"  {mod}: {', '.join(names)}" for mod, names in service_side()]
    return "\n".join(lines)


def main() -> None:
    print(render())


if __name__ == "__main__":
    main()

"""The firmware's trim list, derived from the sources: which functions of the shared protocol
modules (protocol/wire.py, session.py, ucrypto.py) the device never calls, so that
firmware/start.py can delete them at boot and give their heap back.

The source of truth is the code itself: the names the firmware modules use from those
modules (``wire.x``, ``session.x``, ``cr.x``/``ucrypto.x``), closed over what every kept
function uses in turn. ``python -m ecoin.tools.provisioning.trim`` prints the list as it
belongs in start.py (``_SERVICE_SIDE``); tests/firmware/test_trim.py fails when start.py's
copy is stale.
"""

from __future__ import annotations

import ast
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


def start_py_list() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The list as firmware/start.py has it."""
    for node in _source("firmware", "start.py").body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_SERVICE_SIDE":
            return tuple(ast.literal_eval(node.value))
    raise LookupError("firmware/start.py has no _SERVICE_SIDE")


def main() -> None:
    print("_SERVICE_SIDE = (")
    for mod, names in service_side():
        print(f"    ({mod!r}, {names!r}),")
    print(")")


if __name__ == "__main__":
    main()

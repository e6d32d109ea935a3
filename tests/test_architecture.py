"""The arrows between rooms point only downward (docs/ARCHITECTURE.md), and no module
imports itself back through others. Read from the source with ast, function-level
imports included: a cycle hidden inside a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Lower layers first; a room may import rooms of lower layers only. Rooms in one layer
# (the four services) never import each other.
SERVICES = ["bank", "analyst", "gateway", "dashboard"]
LAYERS = [["protocol"], ["common"], SERVICES, ["tools"], ["testing"], ["sim"]]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = ["ecoin", *path.relative_to(REPO).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Every ecoin module ``path`` imports, relative imports resolved. ``from pkg import
    module`` counts as importing the module, not the package's ``__init__``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            submodules = {f"{base}.{a.name}" for a in node.names} & set(known)
            found.update(submodules or {base})
    return {name for name in found if name.startswith("ecoin.")}


def sources() -> dict[str, Path]:
    return {module_name(p): p for room in LAYER for p in sorted((REPO / room).rglob("*.py"))}


def room_of(module: str) -> str:
    return module.split(".")[1]


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = room_of(source), room_of(target)
            if a != b and not LAYER.get(b, 99) < LAYER[a]:
                bad.append(f"{source} imports {target} ({a} may not depend on {b})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif state.get(nxt) == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = sources()
    known = set(mods)
    return {name: {t for t in imports(path, known) if t in mods and t != name} for name, path in mods.items()}


def test_every_room_is_known(graph: dict[str, set[str]]) -> None:
    not_host_code = {"tests", "bench", "firmware", "boards"}
    python_rooms = {p.parent.name for p in REPO.glob("*/__init__.py")} - not_host_code
    assert python_rooms == set(LAYER), "a new room needs its place in LAYERS and docs/ARCHITECTURE.md"
    assert len(graph) > 80


def test_arrows_point_only_downward(graph: dict[str, set[str]]) -> None:
    assert violations(graph) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_the_checks_catch_what_they_look_for() -> None:
    upward = {"ecoin.bank.ledger": {"ecoin.tools.pki"}, "ecoin.tools.pki": set()}
    assert violations(upward) == ["ecoin.bank.ledger imports ecoin.tools.pki (bank may not depend on tools)"]
    sideways = {"ecoin.analyst.link": {"ecoin.gateway.brokerconf"}, "ecoin.gateway.brokerconf": set()}
    assert len(violations(sideways)) == 1
    loop = {"ecoin.analyst.a": {"ecoin.analyst.b"}, "ecoin.analyst.b": {"ecoin.analyst.a"}}
    assert cycles(loop) == [["ecoin.analyst.a", "ecoin.analyst.b", "ecoin.analyst.a"]]

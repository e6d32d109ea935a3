"""Installing the compiled firmware shortens the names no other scope can see (fewer qstrs
on the device), and nothing else: the renamed modules behave as the sources do."""

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ecoin.tools.provisioning import deploy, shrink

LIB = """\
from micropython import const

_LIMIT = const(3)
_scale = 10
TABLE = (1, 2)


class Store:
    def __init__(self, start, name):
        self._n = start
        self._label = name
        self.public = start

    def _bump(self, by):
        self._n += by * _scale
        return self._n

    def add(self, amount, *, twice=False):
        total = self._bump(amount)
        return self._bump(amount) if twice else total


class Other:
    def __init__(self):
        self._n = "other"


def _helper(value, width):
    def inner(x):
        return x + width
    return sum(inner(v) for v in range(value)) + [lambda y: y * 2][0](width)


def make(first, second):
    return Store(first, second), _helper(first, second), _LIMIT, getattr(Store, "add").__name__


def fails(err, x):  # the handler's name rebinds the parameter's
    try:
        raise ValueError("boom")
    except ValueError as err:
        return str(err) + x


class Base:
    def __init__(self):
        self._v = 1


class Child(Base):  # one instance holds both classes' private attributes
    def __init__(self):
        Base.__init__(self)
        self._w = 2

    def both(self):
        return self._v, self._w


class Sized:  # a class body reads its own names before the module's
    _a = 1
    _b = _scale

    def get(self):
        return self._a, self._b
"""

USER = """\
import lib


def run(seed):
    store, got, limit, name = lib.make(seed, 2)
    other = lib.Other()
    return (store.add(4), store.add(1, twice=True), store._label, other._n, got, limit, name,
            lib.TABLE, store.public, lib.fails("param", "!"), lib.Child().both(), lib.Sized().get())
"""


DRIVER = "import user; print(user.run(5))"


def _run(tmp: Path, sources: dict[str, str]) -> str:
    for mod, text in sources.items():
        (tmp / f"{mod}.py").write_text(text)
    (tmp / "micropython.py").write_text("def const(x):\n    return x\n")
    return subprocess.run(
        [sys.executable, "-c", DRIVER], cwd=tmp, capture_output=True, text=True, check=True
    ).stdout


def _names(text: str) -> set[str]:
    return set(shrink._identifiers(ast.parse(text)))


def test_a_renamed_program_behaves_as_its_source(tmp_path: Path) -> None:
    sources = {"lib": LIB, "user": USER}
    out, report = shrink.shrink(sources, keep=[DRIVER])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _run(tmp_path / "a", sources) == _run(tmp_path / "b", out)
    lib = _names(out["lib"])
    gone = {
        "start",
        "name",
        "by",
        "amount",
        "_bump",
        "_scale",
        "_helper",
        "value",
        "width",
        "x",
        "y",
        "make",
        "TABLE",
    }
    assert not gone & lib, gone & lib
    # seen from outside their scope: a keyword, another object's attribute, a string, a
    # class, a private const (free already), self and the dunders; lib.make and lib.TABLE
    # are renamed in both modules alike
    kept = {"twice", "_label", "_n", "add", "public", "_LIMIT", "self", "__init__", "Store", "Other"}
    assert kept <= lib, kept - lib
    assert "lib: _helper -> " in "\n".join(report) and "lib.Store: _bump -> " in "\n".join(report)


def test_a_rename_that_merges_two_bindings_is_refused() -> None:
    """The check behind every install: a class-body name renamed onto a module name it
    reads (or a parameter onto an except clause's name) changes the scopes' bindings."""
    src = "SIZE = 100\n\n\nclass K:\n    _a = 1\n    _b = SIZE\n"
    captured = "a = 100\n\n\nclass K:\n    a = 1\n    b = a\n"
    assert shrink._bindings(src, "m") != shrink._bindings(captured, "m")
    assert shrink._bindings(src, "m") == shrink._bindings(src.replace("_b", "c"), "m")


def test_names_in_keep_stay(tmp_path: Path) -> None:
    out, _ = shrink.shrink({"lib": LIB, "user": USER}, keep=["lib._helper\nstore._bump(by=1)\n"])
    lib = _names(out["lib"])
    assert {"_helper", "_bump", "by"} <= lib and "width" not in lib


def test_new_names_are_used_nowhere_else() -> None:
    out, report = shrink.shrink({"lib": LIB, "user": USER})
    new = {line.rsplit(" -> ", 1)[1] for line in report}
    assert new and not new & _names(LIB) and not new & _names(USER)


@pytest.mark.parametrize("board", deploy.boards())
def test_the_ports_own_names_are_never_renamed(board: str) -> None:
    """Every attribute of something other than self or the firmware's own modules (the ports'
    modules and objects: wlan.isconnected, wdt.feed), every keyword and every string is
    written as in the source."""
    sources = deploy.compiled_sources(board)
    out, report = shrink.shrink(sources)

    def outside(text: str) -> Counter[str]:
        c: Counter[str] = Counter()
        tree = ast.parse(text)
        ours = {"self", *shrink._aliases(tree, sources)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and not (isinstance(n.value, ast.Name) and n.value.id in ours):
                c[n.attr] += 1
            elif isinstance(n, ast.keyword) and n.arg:
                c["kw:" + n.arg] += 1
            elif isinstance(n, ast.Constant) and isinstance(n.value, str):
                c["str:" + n.value] += 1
        return c

    for mod in sources:
        assert outside(out[mod]) == outside(sources[mod]), mod
    assert "def open_store(" in out["start"]  # maintenance over mpremote (shrink.ENTRY_POINTS)
    before = set().union(*(_names(t) for t in sources.values()))
    after = set().union(*(_names(t) for t in out.values()))
    assert len(report) > 50 and len(after) < len(before) - 100, (len(before), len(after))


def test_the_installed_firmware_is_the_shrunk_copy(tmp_path: Path) -> None:
    """mpy=False (sources, for CPython) installs the readable sources; the compiled firmware
    is built from the shrunk ones (shrink checks they parse to the same trees)."""
    deploy.install_firmware(tmp_path / "src", "sim", mpy=False)
    assert (tmp_path / "src" / "collector.py").read_text() == deploy.compiled_sources("sim")["collector"]
    printed = subprocess.run(
        [sys.executable, "-m", "ecoin.tools.provisioning.deploy", "sim"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        printed.splitlines() == shrink.shrink(deploy.compiled_sources("sim"), deploy.boot_sources("sim"))[1]
    )

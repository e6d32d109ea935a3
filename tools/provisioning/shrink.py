"""Shorter names in the device's copy of the firmware, for a smaller heap.

Loading a .mpy interns every name it holds (parameter, function, attribute and global
names) as a qstr, in the heap, for good: 11 bytes of pool entry each on a 64-bit port plus
the text, in pools that grow by doubling. Most of the firmware's names are seen from one
scope only, so installing the firmware (``deploy.install_firmware``) renames those, and
only those, to a few short names that every scope reuses:

- parameters, per function: ``def f(self, deadline)`` becomes ``def f(self, a)``;
- module-level names that are an attribute of nothing but their own module, per module:
  ``_secret``, and ``wire.encode_query``, renamed in wire.py and in every call alike
  (``X = const(...)`` names stay as written);
- private attributes (``self._rx``) that only ``self`` uses, per class, for classes that
  share their instances with no other class of ours (no inheritance between them).

A name is left alone wherever it could be seen from outside: used as a keyword argument,
as an attribute of anything but ``self`` or the module that defines it (a collaborator's
``obj.x``, the ports' ``wdt.feed``), bound by ``except ... as``, ``global`` or an import,
a class, written in a string (``getattr``, a dict key), an entry point for maintenance
over mpremote (``ENTRY_POINTS``), or named anywhere in ``keep`` (the boot files, the
scripts of tests and benches that reach into the firmware). The new names appear nowhere
else in the firmware, and the renamed text must parse to the same tree with only the
intended names changed and the same bindings in every scope, or installing fails. The
source of truth stays the readable source. ``python -m ecoin.tools.provisioning.deploy
BOARD`` prints what is renamed, for reading a device traceback.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import keyword
import re
import string
import symtable
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_KEEP_PARAMS = {"self", "cls"}  # no gain (known to every port) and tracebacks read better
# What an owner or a test types over mpremote (`import start; start.open_store()`).
ENTRY_POINTS = {"open_store"}

Scope = ast.FunctionDef | ast.Lambda


@dataclass
class _Facts:
    """What the whole program (and the keep scripts) do with each name."""

    used: set[str] = field(default_factory=set)  # every identifier and string
    strings: set[str] = field(default_factory=set)
    keywords: set[str] = field(default_factory=set)
    # attribute uses on one of the program's modules (wire.X, cr.X): name -> those modules;
    # "" stands for anything else (an object, a port's module)
    owners: dict[str, set[str]] = field(default_factory=dict)
    # attributes of something other than self, or of self outside any class
    foreign_attrs: set[str] = field(default_factory=set)
    class_bound: set[str] = field(default_factory=set)  # bound directly in a class body
    protected: set[str] = field(default_factory=set)  # named in a keep script

    def fixed(self, name: str) -> bool:
        return name in self.protected or name in self.strings or name in self.keywords


def _identifiers(tree: ast.AST) -> Iterator[str]:
    for n in ast.walk(tree):
        name = _ident(n)
        if name is not None:
            yield name
        elif isinstance(n, ast.keyword) and n.arg:
            yield n.arg
        elif isinstance(n, ast.alias):
            yield from (n.name.split(".")[0], n.asname or "")
        elif isinstance(n, ast.Global | ast.Nonlocal):
            yield from n.names
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            yield n.value


def _aliases(tree: ast.Module, modules: Iterable[str]) -> dict[str, str]:
    """The names a module gives the program's modules it imports (import ucrypto as cr)."""
    ours = set(modules)
    return {
        a.asname or a.name: a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import)
        for a in n.names
        if a.name in ours
    }


def _owner(n: ast.Attribute, aliases: dict[str, str]) -> str:
    return aliases.get(n.value.id, "") if isinstance(n.value, ast.Name) else ""


def _facts(
    trees: dict[str, ast.Module], aliases: dict[str, dict[str, str]], keep: Iterable[ast.Module]
) -> _Facts:
    f = _Facts()
    for mod, tree in trees.items():
        f.used.update(_identifiers(tree))
        in_class = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for n in ast.walk(c)}
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                f.strings.add(n.value)
            elif isinstance(n, ast.keyword) and n.arg:
                f.keywords.add(n.arg)
            elif isinstance(n, ast.Attribute):
                f.owners.setdefault(n.attr, set()).add(_owner(n, aliases[mod]))
                on_self = isinstance(n.value, ast.Name) and n.value.id == "self"
                if not on_self or id(n) not in in_class:  # self outside a class: unknown
                    f.foreign_attrs.add(n.attr)
            elif isinstance(n, ast.ClassDef):
                for stmt in n.body:
                    f.class_bound.update(_bound_here(stmt))
            elif isinstance(n, ast.ImportFrom | ast.Import):
                f.protected.update(a.asname or a.name.split(".")[0] for a in n.names)
    for tree in keep:
        f.protected.update(_identifiers(tree))
    f.protected |= ENTRY_POINTS
    f.used |= f.protected
    return f


def _bound_here(stmt: ast.stmt) -> set[str]:
    """Names a statement binds in the scope it is in (not inside nested functions)."""
    if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
        return {stmt.name}
    out = set()
    for n in _walk_scope(stmt):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            out.add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.ClassDef):
            out.add(n.name)
    return out


def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk that does not enter nested functions, lambdas or classes (it yields them)."""
    todo = list(ast.iter_child_nodes(node))
    while todo:
        n = todo.pop()
        yield n
        if not isinstance(n, ast.FunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(n))


def _fresh(used: set[str]) -> list[str]:
    """Short names the program uses nowhere: the pool every scope draws from."""
    reserved = used | set(dir(builtins)) | set(keyword.kwlist)
    first = string.ascii_letters
    rest = string.ascii_letters + string.digits
    names = itertools.chain(first, (a + b for a in first for b in rest))
    return [n for n in itertools.islice(names, 2000) if n not in reserved]


class _Renamer:
    def __init__(
        self, trees: dict[str, ast.Module], aliases: dict[str, dict[str, str]], facts: _Facts
    ) -> None:
        self.trees = trees
        self.aliases = aliases
        self.facts = facts
        self.pool = _fresh(facts.used)
        self.names: dict[int, str] = {}  # id(node) -> new identifier
        self.module_names: dict[str, set[str]] = {}  # module -> the new names of its globals
        self.report: list[str] = []

    def new(self, node: ast.AST, old: str) -> str:
        return self.names.get(id(node), old)

    # module-level names that are an attribute of nothing but their module, per module
    def module_privates(self, mod: str, tree: ast.Module) -> None:
        bound: set[str] = set()
        for stmt in tree.body:  # classes keep their names: the console prints exceptions
            if not (isinstance(stmt, ast.Assign) and _is_const(stmt.value) or isinstance(stmt, ast.ClassDef)):
                bound |= _bound_here(stmt)
        f = self.facts
        # a module-level name that is an attribute of nothing but this module (mod.X in the
        # other modules) is renamed here and there alike
        todo = sorted(
            n
            for n in bound
            if not n.startswith("__")
            and not f.fixed(n)
            and f.owners.get(n, set()) <= {mod}
            and n not in f.class_bound
        )
        mapping = dict(zip(todo, self.pool, strict=False))
        self.module_names[mod] = set(mapping.values())
        for n in ast.walk(tree):
            name = _ident(n)
            if name in mapping and not isinstance(n, ast.Attribute | ast.keyword | ast.alias):
                self.names[id(n)] = mapping[name]
        for name, other in self.trees.items():
            for n in ast.walk(other):
                if (
                    isinstance(n, ast.Attribute)
                    and n.attr in mapping
                    and _owner(n, self.aliases[name]) == mod
                ):
                    self.names[id(n)] = mapping[n.attr]
        self.report += [f"{mod}: {old} -> {new}" for old, new in mapping.items()]

    # private attributes that only self uses, per class sharing its instances with no other
    def class_privates(self, mod: str, cls: ast.ClassDef) -> None:
        nested = any(isinstance(n, ast.ClassDef) for n in ast.walk(cls) if n is not cls)
        if nested or not self._alone(cls):
            return
        f = self.facts
        attrs = {
            n.attr
            for n in ast.walk(cls)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
        }
        body = {name for stmt in cls.body for name in _bound_here(stmt)}
        todo = sorted(a for a in attrs | body if _private(a) and not f.fixed(a) and a not in f.foreign_attrs)
        # not the module's new names: a class body reads its own names before the module's
        pool = [p for p in self.pool if p not in self.module_names.get(mod, ())]
        mapping = dict(zip(todo, pool, strict=False))
        for n in ast.walk(cls):
            if isinstance(n, ast.Attribute) and n.attr in mapping and isinstance(n.value, ast.Name):
                self.names[id(n)] = mapping[n.attr]
        for stmt in cls.body:
            for n in [stmt, *(_walk_scope(stmt) if not isinstance(stmt, ast.FunctionDef) else ())]:
                name = _ident(n)
                if name in mapping and isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Name):
                    self.names[id(n)] = mapping[name]
        self.report += [f"{mod}.{cls.name}: {old} -> {new}" for old, new in mapping.items()]

    def _alone(self, cls: ast.ClassDef) -> bool:
        """cls shares its instances with no other class of ours: its bases are builtins
        (Exception, object) and no class names it as a base. Classes that inherit from one
        another keep their private attributes as written (their pools would meet in one
        instance)."""
        if not all(isinstance(b, ast.Name) and b.id in dir(builtins) for b in cls.bases):
            return False
        for tree in self.trees.values():
            for c in ast.walk(tree):
                if isinstance(c, ast.ClassDef) and any(_ident(b) == cls.name for b in c.bases):
                    return False
        return True

    # parameters, per function
    def params(self, fn: Scope) -> None:
        f = self.facts
        args = fn.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        every += [a for a in (args.vararg, args.kwarg) if a]
        inner = _inner_bindings(fn)
        taken = {self.new(n, name) for n in _body_nodes(fn) if (name := _ident(n))}
        free = (p for p in self.pool if p not in taken)
        for a in every:
            old = a.arg
            if old in _KEEP_PARAMS or f.fixed(old) or old in inner or id(a) in self.names:
                continue
            new = next(free)
            self.names[id(a)] = new
            for n in _body_nodes(fn):
                if isinstance(n, ast.Name) and n.id == old and id(n) not in self.names:
                    self.names[id(n)] = new

    def run(self) -> None:
        for mod, tree in self.trees.items():
            self.module_privates(mod, tree)
            for n in ast.walk(tree):
                if isinstance(n, ast.ClassDef):
                    self.class_privates(mod, n)
            for n in ast.walk(tree):  # outer functions first: inner ones see their names
                if isinstance(n, ast.FunctionDef | ast.Lambda):
                    self.params(n)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_const(value: ast.expr) -> bool:
    """x = const(...), which keeps its name: a private one costs nothing already (the
    compiler drops it)."""
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "const"


def _ident(n: ast.AST) -> str | None:
    if isinstance(n, ast.Name):
        return n.id
    if isinstance(n, ast.arg):
        return n.arg
    if isinstance(n, ast.FunctionDef | ast.ClassDef):
        return n.name
    if isinstance(n, ast.Attribute):
        return n.attr
    return None


def _body_nodes(fn: Scope) -> Iterator[ast.AST]:
    """Everything inside a function's body, nested scopes included (not its defaults or
    decorators: those belong to the enclosing scope)."""
    body = fn.body if isinstance(fn, ast.FunctionDef) else [fn.body]
    for stmt in body:
        yield from ast.walk(stmt)


def _inner_bindings(fn: Scope) -> set[str]:
    """Names that a nested scope of fn binds or declares again (those stay as they are)."""
    out: set[str] = set()
    for n in _body_nodes(fn):
        if isinstance(n, ast.FunctionDef | ast.Lambda):
            a = n.args
            out.update(x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x)
            body = n.body if isinstance(n, ast.FunctionDef) else [n.body]
            for stmt in body:
                for m in ast.walk(stmt):
                    if isinstance(m, ast.Name) and isinstance(m.ctx, ast.Store):
                        out.add(m.id)
        elif isinstance(n, ast.comprehension):
            out.update(m.id for m in ast.walk(n.target) if isinstance(m, ast.Name))
        elif isinstance(n, ast.ClassDef):
            out.update(_ident(m) or "" for m in ast.walk(n) if isinstance(m, ast.Name | ast.ClassDef))
        elif isinstance(n, ast.Global | ast.Nonlocal):
            out.update(n.names)
    return out


def _edits(text: str, tree: ast.Module, names: dict[int, str]) -> str:
    """The source with each renamed identifier replaced where it stands (layout kept)."""
    lines = [line.encode() for line in text.splitlines(keepends=True)]
    todo: list[tuple[int, int, int, str]] = []  # line, start, end (bytes), new
    for n in ast.walk(tree):
        new = names.get(id(n))
        old = _ident(n)
        if new is None or old is None:
            continue
        if isinstance(n, ast.Attribute):
            line, end = n.end_lineno or n.lineno, n.end_col_offset or 0
            todo.append((line, end - len(old), end, new))
        elif isinstance(n, ast.FunctionDef | ast.ClassDef):
            m = re.compile(rb"(def|class)\s+" + old.encode() + rb"\b").search(
                lines[n.lineno - 1], n.col_offset
            )
            if not m:
                raise ValueError(f"cannot find the name of {old} on line {n.lineno}")
            todo.append((n.lineno, m.end() - len(old), m.end(), new))
        elif isinstance(n, ast.Name | ast.arg):
            todo.append((n.lineno, n.col_offset, n.col_offset + len(old), new))
    for line, start, end, new in sorted(todo, reverse=True):
        raw = lines[line - 1]
        lines[line - 1] = raw[:start] + new.encode() + raw[end:]
    return b"".join(lines).decode()


def shrink(sources: dict[str, str], keep: Iterable[str] = ()) -> tuple[dict[str, str], list[str]]:
    """sources: module name -> source text, the modules compiled for one board. keep: texts
    whose names must stay (tests, benches, the boot files). Returns the renamed texts and
    the list of renames ("module[.Class]: old -> new"; parameters are not listed)."""
    trees = {mod: ast.parse(text) for mod, text in sources.items()}
    aliases = {mod: _aliases(tree, trees) for mod, tree in trees.items()}
    facts = _facts(trees, aliases, [ast.parse(text) for text in keep])
    _refuse_declarations(trees, facts)
    renamer = _Renamer(trees, aliases, facts)
    renamer.run()
    out = {mod: _edits(sources[mod], trees[mod], renamer.names) for mod in sources}
    for mod, text in out.items():
        _check(trees[mod], ast.parse(text), renamer.names, mod)
    return out, renamer.report


def _check(before: ast.Module, after: ast.Module, names: dict[int, str], mod: str) -> None:
    """The renamed text parses to the same tree with exactly the intended names, and each
    of its scopes has the same bindings (no two names merged into one, none captured)."""
    pairs = itertools.zip_longest(ast.walk(before), ast.walk(after))
    for old, new in pairs:
        if type(old) is not type(new) or names.get(id(old), _ident(old)) != _ident(new):
            raise ValueError(
                f"renaming {mod} changed more than its names (near line {getattr(old, 'lineno', '?')})"
            )
    if _bindings(ast.unparse(before), mod) != _bindings(ast.unparse(after), mod):
        raise ValueError(f"renaming {mod} changed what a name refers to in some scope")


def _bindings(text: str, mod: str) -> list[tuple[str, list[tuple[bool, ...]]]]:
    """Per scope (in order), the kinds of its symbols: parameter, local, global, free..."""
    out: list[tuple[str, list[tuple[bool, ...]]]] = []
    todo = [symtable.symtable(text, mod, "exec")]
    while todo:
        t = todo.pop(0)
        kinds: list[tuple[bool, ...]] = sorted(
            (s.is_parameter(), s.is_local(), s.is_global(), s.is_declared_global(), s.is_free(),
             s.is_imported(), s.is_assigned(), s.is_referenced(), s.is_namespace())
            for s in t.get_symbols()
        )  # fmt: skip
        out.append((str(t.get_type()), kinds))
        todo.extend(t.get_children())
    return out


def _refuse_declarations(trees: dict[str, ast.Module], facts: _Facts) -> None:
    """Names of global and nonlocal statements and of ``except ... as`` are kept as written
    (those carry no position per name, so they could not be renamed with their uses):
    marking them fixed keeps every rename away from them."""
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, ast.Global | ast.Nonlocal):
                facts.protected.update(n.names)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                facts.protected.add(n.name)

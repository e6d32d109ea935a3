"""Finding analysers: the built-ins and every entry point of the group ``ecoin.analysers``."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from . import builtin
from .plugins import GROUP, Analyser, PluginError


@dataclass
class Discovery:
    analysers: dict[str, Analyser]
    problems: list[str]  # entry points that were skipped, and why


def discover() -> Discovery:
    """Every analyser of the entry-point group ``ecoin.analysers``. The built-ins are always
    present, even when ecoin runs from a source tree without installed metadata."""
    found: dict[str, Analyser] = {a.name: a for a in builtin.ALL}
    problems: list[str] = []
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not stop the others
            problems.append(f"{ep.name} ({ep.value}): cannot load: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(obj, Analyser):
            problems.append(f"{ep.name} ({ep.value}): is a {type(obj).__name__}, not an Analyser")
        elif obj.name != ep.name:
            problems.append(f"{ep.name} ({ep.value}): the analyser calls itself {obj.name!r}")
        elif found.get(obj.name, obj) is not obj:
            problems.append(f"{ep.name} ({ep.value}): the name {obj.name!r} is already taken")
        else:
            found[obj.name] = obj
    return Discovery(dict(sorted(found.items())), problems)


def load(name: str) -> Analyser:
    """One analyser by name (PluginError if no working entry point has it)."""
    d = discover()
    if name in d.analysers:
        return d.analysers[name]
    why = [p for p in d.problems if p.startswith(f"{name} ")]
    raise PluginError(f"no analyser {name!r}" + (f": {why[0]}" if why else ""))

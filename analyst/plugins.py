"""Analysers: the plug-in type (discovery is ecoin.analyst.discovery; the checks of what
goes in and out are ecoin.analyst.readings).

An analyser is a name, a description, an input schema and a function::

    from ecoin.analyst.plugins import Analyser

    def _median(readings):
        values = sorted(readings["values"])
        return values[len(values) // 2]

    MEDIAN = Analyser("median", "The middle value.", _median)

registered in the package's ``pyproject.toml``::

    [project.entry-points."ecoin.analysers"]
    median = "my_package.module:MEDIAN"

``analyse`` receives the readings (PROTOCOL.md section 5) already parsed and checked, and
returns any JSON value. Options (``Analyser(..., options={"k": 3.0})``) are keyword
arguments of ``analyse`` whose defaults an analyst's configuration may override.

Errors::

    AnalyserError
    ├── PluginError       an entry point that does not load or is not a valid Analyser
    ├── InvalidReadings   the device's payload breaks section 5 or the analyser's schema
    ├── InvalidResult     the analyser returned something that is not a small JSON value
    └── InvalidSchema     an analyser's schema is not valid JSON Schema
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecoin.protocol import wire

from . import readings
from .readings import READINGS_SCHEMA, AnalyserError, InvalidReadings, InvalidResult, InvalidSchema

__all__ = ["READINGS_SCHEMA", "Analyser", "AnalyserError", "InvalidReadings", "InvalidResult", "PluginError"]

GROUP = "ecoin.analysers"
Option = bool | int | float | str


class PluginError(AnalyserError):
    """An entry point that does not load, or is not a valid Analyser."""


@dataclass(frozen=True)
class Analyser:
    name: str
    description: str
    analyse: Callable[..., Any]  # analyse(readings, **options) -> JSON value
    schema: Mapping[str, Any] = field(default_factory=lambda: READINGS_SCHEMA)
    options: Mapping[str, Option] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            wire.service_name(self.name)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"analyser name {self.name!r}: {exc}") from None
        if not isinstance(self.description, str) or not callable(self.analyse):
            raise PluginError(f"analyser {self.name}: needs a text description and a callable analyse")
        try:
            readings.compiled(self.schema)
        except InvalidSchema as exc:
            raise PluginError(f"analyser {self.name}: schema: {exc}") from None

    def run(self, readings: dict[str, Any]) -> Any:
        return self.analyse(readings, **self.options)

    def configured(self, overrides: Mapping[str, Any]) -> Analyser:
        """A copy with some options replaced; unknown options and wrong types are refused."""
        options = dict(self.options)
        for key, value in overrides.items():
            if key not in options:
                known = ", ".join(sorted(options)) or "none"
                raise PluginError(f"analyser {self.name}: unknown option {key!r} (known: {known})")
            want = type(options[key])
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not want:
                raise PluginError(f"analyser {self.name}: option {key} must be {want.__name__}")
            options[key] = value
        return dataclasses.replace(self, options=options)

    def announcement(
        self, analyst: str, price: int = 1, version: str = "1", description: str = ""
    ) -> dict[str, Any]:
        """What the analyst publishes about its service (PROTOCOL.md 7.1): the gateway's
        directory serves it, and answers a device's QUERY with the price."""
        return {
            "service": self.name,
            "analyst": analyst,
            "description": description or self.description,
            "schema": self.schema,
            "price": price,
            "version": version,
        }

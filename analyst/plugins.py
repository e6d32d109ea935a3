"""Analysers: the plug-in type, its discovery, and the checks of what goes in and out.

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
    └── InvalidResult     the analyser returned something that is not a small JSON value
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from ecoin.protocol import wire

GROUP = "ecoin.analysers"
Option = bool | int | float | str


class AnalyserError(Exception):
    """Base of the analyser errors; the message says what is wrong, never the payload."""


class PluginError(AnalyserError):
    pass


class InvalidReadings(AnalyserError):
    pass


class InvalidResult(AnalyserError):
    pass


# The readings of PROTOCOL.md section 5, in the schema dialect below.
READINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sensor", "unit", "start", "interval", "values"],
    "additionalProperties": False,
    "properties": {
        "sensor": {"type": "string", "minLength": 1, "maxLength": 32},
        "unit": {"type": "string", "maxLength": 16},
        "start": {"type": "integer", "minimum": 0},
        "interval": {"type": "number", "exclusiveMinimum": 0},
        "values": {"type": "array", "minItems": 1, "maxItems": 512, "items": {"type": "number"}},
    },
}

_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "enum",
}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


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
        check_schema(self.schema, f"analyser {self.name}: schema")

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

    def announcement(self, analyst: str) -> dict[str, Any]:
        return {
            "service": self.name,
            "analyst": analyst,
            "description": self.description,
            "schema": self.schema,
        }


# Discovery.


@dataclass
class Discovery:
    analysers: dict[str, Analyser]
    problems: list[str]  # entry points that were skipped, and why


def discover() -> Discovery:
    """Every analyser of the entry-point group ``ecoin.analysers``. The built-ins are always
    present, even when ecoin runs from a source tree without installed metadata."""
    from ecoin.analyst import builtin

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


# Schemas: a small subset of JSON Schema, enough to describe readings.


def check_schema(schema: Any, where: str) -> None:
    """Raises PluginError if ``schema`` uses anything this dialect does not know."""
    if not isinstance(schema, Mapping):
        raise PluginError(f"{where}: must be a dict")
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise PluginError(f"{where}: unknown keyword(s) {', '.join(sorted(unknown))}")
    if "type" in schema and schema["type"] not in _TYPES:
        raise PluginError(f"{where}: unknown type {schema['type']!r}")
    for name, sub in schema.get("properties", {}).items():
        check_schema(sub, f"{where}.{name}")
    if "items" in schema:
        check_schema(schema["items"], f"{where}[]")


def validate(value: Any, schema: Mapping[str, Any], where: str = "readings") -> None:
    """Raises InvalidReadings naming the first field that breaks ``schema``."""
    kind = schema.get("type")
    if kind and not _TYPES[kind](value):
        raise InvalidReadings(f"{where}: expected {kind}, got {_json_type(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidReadings(f"{where}: not one of the allowed values")
    if isinstance(value, dict):
        _validate_object(value, schema, where)
    elif isinstance(value, list):
        _validate_array(value, schema, where)
    elif isinstance(value, str):
        _bounds(len(value), schema, "minLength", "maxLength", f"{where}: length")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, where)


def _validate_object(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
    props = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            raise InvalidReadings(f"{where}: missing field {key!r}")
    if schema.get("additionalProperties", True) is False:
        extra = sorted(set(value) - set(props))
        if extra:
            raise InvalidReadings(f"{where}: {len(extra)} unknown field(s)")  # names are payload
    for key, sub in props.items():
        if key in value:
            validate(value[key], sub, f"{where}.{key}")


def _validate_array(value: list[Any], schema: Mapping[str, Any], where: str) -> None:
    _bounds(len(value), schema, "minItems", "maxItems", f"{where}: number of items")
    items = schema.get("items")
    if items:
        for i, item in enumerate(value):
            validate(item, items, f"{where}[{i}]")


def _validate_number(value: float, schema: Mapping[str, Any], where: str) -> None:
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        raise InvalidReadings(f"{where}: not a finite number")
    _bounds(value, schema, "minimum", "maximum", where)
    if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
        raise InvalidReadings(f"{where}: must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
        raise InvalidReadings(f"{where}: must be less than {schema['exclusiveMaximum']}")


def _bounds(n: float, schema: Mapping[str, Any], low: str, high: str, what: str) -> None:
    if low in schema and n < schema[low]:
        raise InvalidReadings(f"{what} must be at least {schema[low]}")
    if high in schema and n > schema[high]:
        raise InvalidReadings(f"{what} must be at most {schema[high]}")


def _json_type(value: Any) -> str:
    return next(
        (k for k in ("boolean", "integer", "number", "string", "array", "object") if _TYPES[k](value)), "null"
    )


# Payloads in and out.


def _no_constant(name: str) -> Any:
    raise InvalidReadings(f"readings: {name} is not a number")


def parse_readings(
    data: bytes, schema: Mapping[str, Any] = READINGS_SCHEMA, limit: int = wire.PAYLOAD_MAX
) -> Any:
    """The readings object of a decrypted payload, checked against section 5 and ``schema``."""
    if len(data) > limit:
        raise InvalidReadings(f"readings: {len(data)} bytes, more than the limit of {limit}")
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InvalidReadings("readings: not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        if isinstance(exc, InvalidReadings):
            raise
        raise InvalidReadings(f"readings: not JSON ({str(exc)[:80]})") from None
    except RecursionError:
        raise InvalidReadings("readings: nested too deeply") from None
    validate(value, READINGS_SCHEMA)
    if schema is not READINGS_SCHEMA:
        validate(value, schema)
    return value


def encode_result(service: str, result: Any) -> bytes:
    """``{"service", "result"}`` as compact UTF-8 JSON of at most PAYLOAD_MAX bytes."""
    try:
        data = json.dumps(
            {"service": service, "result": result}, allow_nan=False, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidResult(f"result of {service} is not finite JSON: {str(exc)[:120]}") from None
    if len(data) > wire.PAYLOAD_MAX:
        raise InvalidResult(f"result of {service} is {len(data)} bytes, more than {wire.PAYLOAD_MAX}")
    return data

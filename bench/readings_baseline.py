"""The baseline of bench_readings.py: the home-made JSON Schema subset the analyst checked
readings with before fastjsonschema (ecoin/analyst/plugins.py at commit 6f58217), frozen
here so that one run measures both. Not used by the product; do not extend it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any


class InvalidReadings(ValueError):
    pass


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: Mapping[str, Any], where: str = "readings") -> None:
    kind = schema.get("type")
    if kind and not _TYPES[kind](value):
        raise InvalidReadings(f"{where}: expected {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidReadings(f"{where}: not one of the allowed values")
    if isinstance(value, dict):
        _object(value, schema, where)
    elif isinstance(value, list):
        _bounds(len(value), schema, "minItems", "maxItems", f"{where}: number of items")
        items = schema.get("items")
        if items:
            for i, item in enumerate(value):
                validate(item, items, f"{where}[{i}]")
    elif isinstance(value, str):
        _bounds(len(value), schema, "minLength", "maxLength", f"{where}: length")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _number(value, schema, where)


def _object(value: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
    props = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            raise InvalidReadings(f"{where}: missing field {key!r}")
    if schema.get("additionalProperties", True) is False and set(value) - set(props):
        raise InvalidReadings(f"{where}: unknown field(s)")
    for key, sub in props.items():
        if key in value:
            validate(value[key], sub, f"{where}.{key}")


def _number(value: float, schema: Mapping[str, Any], where: str) -> None:
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


def _no_constant(name: str) -> Any:
    raise InvalidReadings(f"readings: {name} is not a number")


def parse_readings(data: bytes, schema: Mapping[str, Any]) -> Any:
    """Bytes to checked readings, as the analyst did it then (section 5's schema only)."""
    value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    validate(value, schema)
    return value

"""What goes into an analyser and what comes out: readings (PROTOCOL.md section 5) checked
against JSON Schema, results encoded as small finite JSON.

Schemas are compiled once by fastjsonschema (a well-kept JSON Schema implementation that
turns a schema into Python code: faster than the hand-written walk it replaced, 3x on the
demo's readings and 8x on 512 values; `make bench` measures both side by side in
bench/bench_readings.py). Schemas come from installed analyser
packages, trusted code, never from the network. Error messages name the field and the
rule, never a value: readings are the device's secret.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema

from ecoin.protocol import wire


class AnalyserError(Exception):
    """Base of every analyser failure (see ecoin.analyst.plugins for the tree)."""


class InvalidReadings(AnalyserError):
    """The device's payload breaks section 5 or the analyser's schema."""


class InvalidResult(AnalyserError):
    """The analyser returned something that is not a small finite JSON value."""


class InvalidSchema(AnalyserError):
    """An analyser's schema is not valid JSON Schema."""


# The readings of PROTOCOL.md section 5.
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

_compiled: dict[str, Callable[[Any], Any]] = {}  # by content: equal schemas share one validator
# By identity, the per-operation path: each analyser's schema is one object for the life of
# the process, and serialising it to find its validator would cost more than the check
# (bench/bench_readings.py). The schema is kept in the entry, so its id stays its own.
_by_id: dict[int, tuple[Mapping[str, Any], Callable[[Any], Any]]] = {}
# Rules whose definition may be shown: they come from the schema, not the payload.
_SHOWN = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
          "minItems", "maxItems"}  # fmt: skip


def compiled(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    """The validator of ``schema``, compiled on first use; InvalidSchema if it is not one.
    A schema is read once: one changed after its first use needs to be a new object."""
    hit = _by_id.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _compiled.get(key)
    if found is None:
        try:
            found = fastjsonschema.compile(dict(schema))
        except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError) as exc:
            raise InvalidSchema(str(exc)) from None
        _compiled[key] = found
    _by_id[id(schema)] = (schema, found)
    return found


def validate(value: Any, schema: Mapping[str, Any], where: str = "readings") -> None:
    """Raises InvalidReadings naming the first field that breaks ``schema``, and the rule."""
    try:
        compiled(schema)(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        field = where + (exc.name or "data").removeprefix("data")
        rule = exc.rule or "schema"
        if rule == "required" and isinstance(exc.value, dict):  # names from the schema, not the payload
            missing = [name for name in exc.rule_definition if name not in exc.value]
            raise InvalidReadings(f"{field}: missing field {', '.join(map(repr, missing))}") from None
        shown = f" {json.dumps(exc.rule_definition)}" if rule in _SHOWN else ""
        raise InvalidReadings(f"{field}: breaks {rule}{shown}") from None


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidReadings("readings: not a finite number")
    return number


def _integer(text: str) -> int:
    number = int(text)
    try:
        float(number)
    except OverflowError:
        raise InvalidReadings("readings: not a finite number") from None
    return number


def _no_constant(name: str) -> Any:
    raise InvalidReadings(f"readings: {name} is not a number")


def parse_readings(
    data: bytes, schema: Mapping[str, Any] = READINGS_SCHEMA, limit: int = wire.PAYLOAD_MAX
) -> Any:
    """The readings object of a decrypted payload, checked against section 5 and ``schema``."""
    if len(data) > limit:
        raise InvalidReadings(f"readings: {len(data)} bytes, more than the limit of {limit}")
    try:
        value = json.loads(
            data.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite, parse_int=_integer
        )
    except UnicodeDecodeError:
        raise InvalidReadings("readings: not UTF-8") from None
    except InvalidReadings:
        raise
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
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


def with_paid(data: bytes, paid: int) -> bytes:
    """``data`` (from ``encode_result``) with ``"paid": n``, the coins the bank spent for the
    operation: inside the authenticated result, so the device learns what it was charged
    whatever price a gateway told it (PROTOCOL.md 5)."""
    out = b'%s,"paid":%d}' % (data[:-1], paid)
    if len(out) > wire.PAYLOAD_MAX:
        raise InvalidResult(f"result is {len(out)} bytes with its price, more than {wire.PAYLOAD_MAX}")
    return out

"""The Analyser type, the built-ins, the readings checks of PROTOCOL.md section 5, discovery."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ecoin.analyst import builtin, discovery
from ecoin.analyst import readings as readings_mod
from ecoin.analyst.plugins import Analyser, InvalidReadings, InvalidResult, PluginError


def readings(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sensor": "t0",
        "unit": "C",
        "start": 0,
        "interval": 1.0,
        "values": [1, 2, 3, 4],
    }
    base.update(changes)
    return base


def raw(value: object) -> bytes:
    return json.dumps(value).encode()


# Built-ins.


def test_average_stats_size() -> None:
    r = readings(values=[2, 4, 4, 4, 5, 5, 7, 9])
    assert builtin.AVERAGE.run(r) == 5.0
    assert builtin.STATS.run(r) == {"count": 8, "min": 2.0, "max": 9.0, "mean": 5.0, "std": 2.0}
    assert builtin.SIZE.run(r) == 8


def test_average_keeps_precision_of_mixed_magnitudes() -> None:
    assert builtin.AVERAGE.run(readings(values=[1e16, 1.0, -1e16, 1.0])) == 0.5


def test_huge_values_do_not_overflow() -> None:
    r = readings(values=[1.5e308, 1.5e308, -1.5e308])
    assert builtin.AVERAGE.run(r) == pytest.approx(0.5e308)
    stats = builtin.STATS.run(r)
    assert math.isfinite(stats["std"]) and stats["std"] == pytest.approx(1.414213562e308)


def test_anomaly_finds_values_beyond_k_deviations_and_k_is_an_option() -> None:
    r = readings(values=[10.0] * 20 + [30.0])
    out = builtin.ANOMALY.run(r)
    assert out["k"] == 3.0 and out["indices"] == [20] and out["count"] == 1
    assert builtin.ANOMALY.configured({"k": 5}).run(r)["indices"] == []  # 30 is ~4.5 std away
    assert builtin.ANOMALY.run(readings(values=[3, 3, 3]))["indices"] == []  # std 0: nothing odd


def test_options_are_checked() -> None:
    with pytest.raises(PluginError, match="unknown option 'z'"):
        builtin.ANOMALY.configured({"z": 1})
    with pytest.raises(PluginError, match="option k must be float"):
        builtin.ANOMALY.configured({"k": "3"})
    with pytest.raises(PluginError, match="known: none"):
        builtin.AVERAGE.configured({"k": 1.0})


def test_builtin_results_always_fit_a_payload() -> None:
    worst = readings(values=[float(i % 2) * 1e300 for i in range(512)])
    for a in builtin.ALL:
        body = readings_mod.encode_result(a.name, a.configured({"k": 0.0} if a.options else {}).run(worst))
        assert len(body) <= 4096


# Readings (section 5).


def test_valid_readings_parse() -> None:
    assert readings_mod.parse_readings(raw(readings())) == readings()
    assert readings_mod.parse_readings(raw(readings(unit="", values=[0.5] * 512, start=1795000000)))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", 'readings: breaks type "object"'),
        (raw({k: v for k, v in readings().items() if k != "interval"}), "readings: missing field 'interval'"),
        (raw(readings(extra=1, more=2)), "readings: breaks additionalProperties$"),
        (raw(readings(sensor="")), "readings.sensor: breaks minLength 1"),
        (raw(readings(sensor="s" * 33)), "readings.sensor: breaks maxLength 32"),
        (raw(readings(unit="u" * 17)), "readings.unit: breaks maxLength 16"),
        (raw(readings(start=-1)), "readings.start: breaks minimum 0"),
        (raw(readings(start=1.5)), 'readings.start: breaks type "integer"'),
        (raw(readings(interval=0)), "readings.interval: breaks exclusiveMinimum 0"),
        (raw(readings(interval=True)), 'readings.interval: breaks type "number"'),
        (raw(readings(values=[])), "readings.values: breaks minItems 1"),
        (raw(readings(values=[1.0] * 513)), "readings.values: breaks maxItems 512"),
        (raw(readings(values=[1, "2"])), r"readings.values\[1\]: breaks type \"number\""),
        (raw(readings(values=[1, None])), r"readings.values\[1\]: breaks type \"number\""),
        (raw(readings(values=[True])), r"readings.values\[0\]: breaks type \"number\""),
        (b'{"sensor":"t","unit":"C","start":0,"interval":1,"values":[NaN]}', "NaN is not a number"),
        (
            b'{"sensor":"t","unit":"C","start":0,"interval":1,"values":[-Infinity]}',
            "-Infinity is not a number",
        ),
        (b'{"sensor":"t","unit":"C","start":0,"interval":1,"values":[1e400]}', "not a finite number"),
        (b'{"sensor":"t","unit":"C","start":0,"interval":1,"values":[' + b"9" * 400 + b"]}", "not a finite"),
        (b"[" * 100000 + b"]" * 100000, "nested too deeply|not JSON"),
    ],
)
def test_bad_readings_are_refused_with_a_clear_message(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidReadings, match=message):
        readings_mod.parse_readings(payload, limit=10**6)


def test_readings_over_the_size_limit_are_refused_unread() -> None:
    with pytest.raises(InvalidReadings, match="4097 bytes, more than the limit of 4096"):
        readings_mod.parse_readings(b" " * 4097)
    with pytest.raises(InvalidReadings, match="limit of 10$"):
        readings_mod.parse_readings(raw(readings()), limit=10)


def test_error_messages_never_quote_the_payload() -> None:
    secret = "s3cr3t-reading"
    for bad in (readings(**{secret: 1}), readings(sensor=secret * 3), readings(values=[secret])):
        with pytest.raises(InvalidReadings) as info:
            readings_mod.parse_readings(raw(bad))
        assert secret not in str(info.value)


def test_an_analyser_schema_narrows_the_readings() -> None:
    with pytest.raises(InvalidReadings, match="breaks minItems 2"):
        readings_mod.parse_readings(raw(readings(values=[1])), builtin.ANOMALY.schema)
    assert readings_mod.parse_readings(raw(readings(values=[1, 2])), builtin.ANOMALY.schema)


# Results.


def test_results_must_be_small_finite_json() -> None:
    assert readings_mod.encode_result("size", 3) == b'{"service":"size","result":3}'
    with pytest.raises(InvalidResult, match="not finite JSON"):
        readings_mod.encode_result("x", math.nan)
    with pytest.raises(InvalidResult, match="not finite JSON"):
        readings_mod.encode_result("x", {1, 2})
    with pytest.raises(InvalidResult, match="more than 4096"):
        readings_mod.encode_result("x", "a" * 4096)


def test_a_result_says_what_the_bank_charged() -> None:
    data = readings_mod.encode_result("size", {"n": 3})
    assert readings_mod.with_paid(data, 2) == b'{"service":"size","result":{"n":3},"paid":2}'
    almost = readings_mod.encode_result("x", "a" * (4096 - 30))  # fits, but not with "paid"
    with pytest.raises(InvalidResult, match="more than 4096"):
        readings_mod.with_paid(almost, 1)


# The Analyser type and discovery.


def test_analyser_definitions_are_checked() -> None:
    with pytest.raises(PluginError, match="analyser name 'Bad Name'"):
        Analyser("Bad Name", "d", len)
    with pytest.raises(PluginError, match="needs a text description and a callable"):
        Analyser("ok", "d", "not callable")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="analyser ok: schema: .*"):
        Analyser("ok", "d", len, schema={"type": "object", "minItems": "two"})
    with pytest.raises(PluginError, match="analyser ok: schema: Unknown type"):
        Analyser("ok", "d", len, schema={"properties": {"values": {"type": "float"}}})


def test_announcement_carries_name_description_and_schema() -> None:
    a = builtin.STATS.announcement("alice")
    assert a["service"] == "stats" and a["analyst"] == "alice" and a["schema"]["type"] == "object"
    json.dumps(a)  # JSON as it is


def test_builtins_are_discovered() -> None:
    found = discovery.discover()
    assert {"average", "stats", "size", "anomaly"} <= set(found.analysers)
    assert found.analysers["average"] is builtin.AVERAGE
    with pytest.raises(PluginError, match="no analyser 'nope'"):
        discovery.load("nope")


@pytest.mark.slow
def test_a_pip_installed_package_adds_analysers(with_plugins: Path) -> None:
    found = discovery.discover()
    assert found.analysers["median"].run(readings(values=[5, 1, 3, 2])) == 2.5
    assert {"sleepy", "crashy", "raiser", "hog", "chatty"} <= set(found.analysers)
    problems = "\n".join(found.problems)
    assert "broken (ecoin_test_analysers:NO_SUCH_THING): cannot load" in problems
    assert "notone (ecoin_test_analysers:NOT_AN_ANALYSER): is a dict, not an Analyser" in problems
    with pytest.raises(PluginError, match="no analyser 'broken': broken .*cannot load"):
        discovery.load("broken")


def test_cli_lists_installed_analysers(plugin_site: Path) -> None:
    env_path = f"{plugin_site}:{Path(__file__).resolve().parents[2]}"
    cmd = [sys.executable, "-m", "ecoin.analyst.cli", "list"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": env_path}, timeout=60)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert {"average", "anomaly", "median", "stats", "size"} <= set(names)
    assert "[options: k=3.0]" in done.stdout
    assert "skipped: broken" in done.stderr and "skipped: notone" in done.stderr
    as_json = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env={"PYTHONPATH": env_path})
    median = next(a for a in json.loads(as_json.stdout)["analysers"] if a["name"] == "median")
    assert median["schema"]["properties"]["values"]["maxItems"] == 16


def test_cli_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.analyst.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "serve" in done.stdout and "list" in done.stdout

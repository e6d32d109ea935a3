"""Runs every benchmark module ``bench/bench_*.py`` and writes ``build/bench/results.json``.

Each module has ``run(workdir: Path) -> dict[str, float | int | str]``; the figures of all
modules are merged into one flat JSON object and printed as a table. A module that fails is
reported and the others still run; the exit status is non-zero if any failed.

    python -m bench.run            # everything
    python -m bench.run bank wire  # only bench_bank.py and bench_wire.py
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

OUT = Path("build/bench")
# Ratios of figures measured side by side in one run (machines here are noisy: compare
# within a run, never across runs).
RATIOS = {
    "analyst_vs_bank": ("analyst_ops_per_s", "bank_redeem_per_s"),
    "service_e2e_vs_bank": ("service_e2e_ops_per_s", "bank_redeem_per_s"),
    # the same bank process, a minute apart instead of several (bench_analyst)
    "analyst_vs_bank_same_run": ("analyst_ops_per_s", "analyst_bank_direct_per_s"),
    # the price of emulation (bench_arm64): how much the arm64 CPU figure overstates
    "arm64_vs_native_gateway_cpu": ("arm64_gateway_cpu_ms_per_op", "native_gateway_cpu_ms_per_op"),
    # the analyst's MQTT pattern, CPU per message of each client against paho on MQTT 5
    # (bench_mqtt_clients): below 1, cheaper than paho5
    "mqtt_gmqtt_vs_paho5_cpu": ("mqtt_clients_gmqtt_cpu_ms", "mqtt_clients_paho5_cpu_ms"),
    "mqtt_paho311_vs_paho5_cpu": ("mqtt_clients_paho311_cpu_ms", "mqtt_clients_paho5_cpu_ms"),
    "mqtt_gmqtt_vs_paho5_handoff_cpu": (
        "mqtt_clients_gmqtt_handoff_cpu_ms",
        "mqtt_clients_paho5_handoff_cpu_ms",
    ),
    # fastjsonschema against the home-made validator it replaced (bench_readings): above 1, faster
    **{
        f"readings_{what}_new_vs_old": (f"readings_{what}_new_per_s", f"readings_{what}_old_per_s")
        for what in ("validate", "validate512", "parse", "parse512")
    },
}


def ratios(results: dict[str, object]) -> dict[str, float]:
    out = {}
    for name, (top, bottom) in RATIOS.items():
        a, b = results.get(top), results.get(bottom)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            out[name] = round(a / b, 3)
    return out


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    results: dict[str, object] = {}
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.monotonic()
        print(f"bench {name}: running", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix=f"ecoin-bench-{name}-") as tmp:
                figures = module.run(Path(tmp))
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        results.update(figures)
        print(f"bench {name}: done in {time.monotonic() - started:.1f}s", flush=True)
    results.update(ratios(results))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    merged = json.loads(path.read_text()) if argv and path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    width = max((len(k) for k in merged), default=10)
    print(f"\n{'figure'.ljust(width)}  value")
    for key in sorted(merged):
        value = merged[key]
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"{key.ljust(width)}  {shown}")
    print(f"\nwritten: {path}")
    if failed:
        print(f"FAILED benchmarks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

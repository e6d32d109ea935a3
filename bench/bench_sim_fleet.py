"""The whole system under load: 50 simulated devices (the real firmware on the MicroPython
unix port, 64 KiB heap each), the real broker, gateway, two analysts and the bank, as in
`make demo`.

Figures:
- sim_fleet_ops_per_s: answered operations per second, from the first device start to the last
  device's last result.
- sim_fleet_p50_ms, sim_fleet_p99_ms: per-operation latency as each device measures it, from sealing
  the operation to holding the verified, decrypted result (the firmware prints it).
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from ecoin.sim.demo import Demo

DEVICES = 50
OPS = 20
LATENCY = re.compile(r"collector: op \S+ result .* in (\d+) ms")


def run(workdir: Path) -> dict[str, float | int]:
    demo = Demo(workdir, DEVICES, OPS, "72K", "auto", quiet=True)
    result = demo.run()
    latencies = sorted(int(ms) for d in demo.fleet for ms in LATENCY.findall(d.sim.output()))
    if not latencies:
        raise RuntimeError("the devices printed no latencies")
    return {
        "sim_fleet_devices": DEVICES,
        "sim_fleet_ops_ok": result["ops_ok"],
        "sim_fleet_ops_failed": result["ops_failed"],
        "sim_fleet_ops_per_s": round(result["ops_ok"] / demo.elapsed, 1),
        "sim_fleet_p50_ms": statistics.median(latencies),
        "sim_fleet_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "sim_fleet_audit_ok": int(result["audit_ok"]),
    }

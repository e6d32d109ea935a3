"""`make demo` as a newcomer runs it: the whole system, the real firmware on MicroPython."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_the_whole_system_and_ends_with_a_json_summary(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.tools.demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {
        "devices": 5,
        "ops_ok": 100,
        "ops_failed": 0,
        "coins_left": 5 * 980,
        "analyst_credits": 100,
        "interpreter": "micropython",
        "heap_limit": "64K",
        "audit_ok": True,
    }
    assert "bank audit: passed" in done.stdout

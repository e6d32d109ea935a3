"""`make demo` as a newcomer runs it: the whole system, the real firmware on MicroPython."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ecoin.testing.servers import wait_until


def test_demo_runs_the_whole_system_and_ends_with_a_json_summary(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ecoin.sim.demo", "--workdir", str(tmp_path / "demo")],
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
        "analyst_credits": 100 + 15,
        "interpreter": "micropython",
        "heap_limit": "72K",
        "audit_ok": True,
        "policy_refused": True,
        # one priced service paid 3 coins an operation, with 3 coins in one header each time
        "priced": {
            "service": "anomaly",
            "price": 3,
            "ops_ok": 5,
            "ops_failed": 0,
            "coins_paid": 15,
            "earned": 15,
        },
    }
    assert (
        "priced service anomaly: 3 coins an operation; dev-priced paid 15 coins for 5 operations"
        in done.stdout
    )
    assert "bank audit: passed" in done.stdout
    assert "policy refusal: the analyst was told policy_service" in done.stdout
    assert "the owner's claim refunded 1 coin(s)" in done.stdout
    assert "owner statement (olive," in done.stdout and "spent by analyst: alice 60, bob 40" in done.stdout
    # The ledger, the private keys and the logs are not readable by other users.
    secret = [p for p in (tmp_path / "demo").rglob("*") if p.suffix in {".sqlite3", ".key", ".log"}]
    assert any(p.name == "bank.sqlite3" for p in secret) and any(p.suffix == ".log" for p in secret)
    shared = [str(p) for p in secret if p.stat().st_mode & 0o077]
    assert shared == [], shared[:10]
    assert "demo: dashboard on http://127.0.0.1:" in done.stdout
    assert "claimed by olive with its QR code's URI" in done.stdout


def _processes_under(path: Path) -> list[str]:
    """Processes whose command line names path or whose working directory is inside it
    (the simulated devices run in their flash directories)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue  # not a process, or gone
        if str(path) in cmd or cwd.startswith(str(path)):
            found.append(f"{proc.name} {cmd}")
    return found


def test_ctrl_c_stops_everything_the_demo_started(tmp_path):
    import signal

    workdir = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "ecoin.sim.demo", "--ops", "100000", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # wait until the devices run
            if "starting them" in line:
                break
        # broker, bank, 2 analysts, gateway, 5 devices
        wait_until(lambda: len(_processes_under(workdir)) >= 10, what="the demo's processes")
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=60)[0]
    finally:
        demo.kill()
    assert demo.returncode == 130, rest[-2000:]
    assert "everything it started has been stopped" in rest
    assert _processes_under(workdir) == []

"""CPU time the benches read from other processes: user + system, from the kernel.

CPU seconds barely move with what else this shared machine runs, where rates do; so the
benches report CPU per operation next to throughput. /proc counts in ticks (10 ms here);
``precise`` reads the process's CPU clock to the nanosecond, for short rounds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> float:
    fields = path.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces and ")"
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def process(pid: int, tid: int | None = None) -> float:
    """CPU seconds of a process (all its threads), or of one of its threads."""
    return _stat(Path(f"/proc/{pid}/task/{tid}/stat") if tid else Path(f"/proc/{pid}/stat"))


def tree(pid: int) -> float:
    """CPU seconds of a process and its live descendants (a bank and its RSA workers, the
    analyst and its analysers, PostgreSQL's postmaster and its backends)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += process(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile: its time is gone with it
    return total


def precise(pid: int) -> float:
    """CPU seconds of a process to the nanosecond, from its kernel CPU clock
    (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)): for a broker that spends about 100 ms in
    a round, where ticks are too coarse."""
    return time.clock_gettime(((~pid) << 3) | 2)

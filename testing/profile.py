"""Sampling profiles of a running service for benchmarks: ``ECOIN_PROFILE=1 make bench``.

py-spy (the dev extra) samples a process and its children from outside, without touching
its code, so the profile is of the very process the benchmark measures. The raw collapsed
stacks go to ``build/bench/profile-<name>.txt`` and a summary of the functions that held
the CPU (own time, all threads and worker processes) to ``profile-<name>-top.txt``.
``ECOIN_PROFILE=gil`` keeps only the samples of threads holding the GIL. Without the
variable (or without py-spy) nothing is sampled.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OUT = Path("build/bench")
TOP = 40


@contextmanager
def sampled(pid: int, name: str, rate: int = 250) -> Iterator[Path | None]:
    """Samples ``pid`` (and its subprocesses) while the block runs, if asked to."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not os.environ.get("ECOIN_PROFILE") or spy is None:
        yield None
        return
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"profile-{name}.txt"
    cmd = [spy, "record", "-p", str(pid), "-s", "-t", "-r", str(rate), "-f", "raw", "-o", str(raw)]
    if os.environ["ECOIN_PROFILE"] == "gil":  # only what held the GIL: the Python-level work
        cmd.append("--gil")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield raw
    finally:
        proc.send_signal(2)  # py-spy writes its file on SIGINT
        proc.wait(30)
    if raw.exists():
        (OUT / f"profile-{name}-top.txt").write_text(summary(raw.read_text()))


def summary(collapsed: str) -> str:
    """Own-time and total-time shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        threads[";".join(frames[:2])] += n
        own[frames[-1]] += n
        for f in set(frames[1:]):
            total[f] += n
    lines = [f"{samples} samples (active threads only)", "", "by thread:"]
    lines += [f"{n / samples:7.1%}  {t}" for t, n in threads.most_common(TOP)]
    lines += ["", "own time:"] + [f"{n / samples:7.1%}  {f}" for f, n in own.most_common(TOP)]
    lines += ["", "total time:"] + [f"{n / samples:7.1%}  {f}" for f, n in total.most_common(TOP)]
    return "\n".join(lines) + "\n"

"""Runs a flash directory's ``main.py`` on CPython: ``python -m ecoin.sim.compat.run DIR``."""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

_T0 = time.monotonic_ns()
_PERIOD = 1 << 30  # MicroPython's ticks wrap at a power of two; the firmware uses ticks_diff


def ticks_ms() -> int:
    return ((time.monotonic_ns() - _T0) // 1_000_000) % _PERIOD


def ticks_us() -> int:
    return ((time.monotonic_ns() - _T0) // 1_000) % _PERIOD


def ticks_add(t: int, delta: int) -> int:
    return (t + delta) % _PERIOD


def ticks_diff(a: int, b: int) -> int:
    d = (a - b) % _PERIOD
    return d - _PERIOD if d >= _PERIOD // 2 else d


def sleep_ms(ms: float) -> None:
    time.sleep(max(0.0, ms) / 1000)


def sleep_us(us: float) -> None:
    time.sleep(max(0.0, us) / 1_000_000)


def install() -> None:
    """Adds the MicroPython time functions to CPython's time module."""
    for fn in (ticks_ms, ticks_us, ticks_add, ticks_diff, sleep_ms, sleep_us):
        setattr(time, fn.__name__, fn)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m ecoin.sim.compat.run FLASH_DIR", file=sys.stderr)
        return 2
    flash = Path(argv[0]).resolve()
    install()
    sys.path[:0] = [str(flash), str(Path(__file__).resolve().parent)]
    os.chdir(flash)
    print("ecoin-sim: running the firmware on CPython (compatibility layer, no heap cap)", flush=True)
    runpy.run_path(str(flash / "main.py"), run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

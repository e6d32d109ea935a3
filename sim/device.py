"""One simulated device: the firmware in its flash directory, run by a real MicroPython
unix-port process with a board-like heap cap (or, where that binary is absent, by CPython
through ``ecoin.sim.compat``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ecoin.tools.provisioning import flash
from ecoin.tools.provisioning.deploy import find_tool

RUNTIMES = ("auto", "micropython", "cpython")


class SimDevice:
    """``start()`` runs ``main.py`` in ``flash_dir`` (console appended to ``console``, by
    default ``<flash_dir>.log``); ``stop()`` interrupts it like Ctrl-C (the firmware
    disconnects and prints its summary); ``kill()`` is a power cut (SIGKILL)."""

    def __init__(
        self,
        flash_dir: Path,
        heap: str = "64K",
        runtime: str = "auto",
        console: Path | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}")
        self.flash_dir = Path(flash_dir).resolve()
        self.heap = heap
        self.micropython = find_tool("micropython")
        if runtime == "auto":
            runtime = "micropython" if self.micropython else "cpython"
        if runtime == "micropython" and not self.micropython:
            raise FileNotFoundError("the micropython binary is not installed here; use runtime='cpython'")
        self.runtime = runtime
        self.console = Path(console) if console else self.flash_dir.with_name(self.flash_dir.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        if self.runtime == "micropython":
            assert self.micropython
            return [self.micropython, "-X", f"heapsize={self.heap}", "main.py"]
        return [sys.executable, "-u", "-m", "ecoin.sim.compat.run", str(self.flash_dir)]

    def start(self) -> SimDevice:
        if self.running:
            raise RuntimeError(f"{self.flash_dir.name} is already running")
        self._close_log()
        self._log = open(self.console, "ab")  # noqa: SIM115 - owned by the process
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if self.runtime == "micropython":
            env["MICROPYPATH"] = f"{self.flash_dir}:.frozen"  # .frozen: ssl and friends, as on a board
        else:
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            self.command(), cwd=self.flash_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def wait(self, timeout: float | None = None) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        code = self.proc.wait(timeout)
        self._close_log()
        return code

    def stop(self, timeout: float = 10.0) -> int | None:
        """Interrupts the device (SIGINT: KeyboardInterrupt in the firmware); kills it if it
        has not ended after timeout seconds. Returns its exit code."""
        if not self.running:
            return self._finish()
        assert self.proc
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """Cuts the power: SIGKILL, no chance to write anything."""
        if self.running:
            assert self.proc
            self.proc.kill()
        return self._finish()

    def _finish(self) -> int | None:
        code = self.proc.wait() if self.proc else None
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    # What a test or an owner reads from the device's flash and console.

    def output(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = 10.0, count: int = 1) -> bool:
        """Waits until ``text`` has appeared ``count`` times on the console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(text) >= count:
                return True
            if not self.running:
                return self.output().count(text) >= count
            time.sleep(0.02)
        return False

    def state(self) -> flash.FlashState:
        return flash.read_state(self.flash_dir)

    def in_doubt(self) -> list[flash.Doubt]:
        return flash.read_in_doubt(self.flash_dir)

    def __enter__(self) -> SimDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""One simulated device: the firmware in its flash directory, run by a real MicroPython
unix-port process with a board-like heap cap (or, where that binary is absent, by CPython
through ``ecoin.sim.compat``). With ``hardware`` it is a board-faithful board
(``ecoin.sim.hardware``): a supervisor thread keeps its watchdog and restarts the process
when the watchdog or the firmware resets the board."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ecoin.sim import ctrlc
from ecoin.sim.hardware import AccessPoint, Hardware, WatchdogMonitor, write_description
from ecoin.tools.provisioning import flash
from ecoin.tools.provisioning.deploy import find_tool

RUNTIMES = ("auto", "micropython", "cpython")
RESET = 75  # the exit status of boards/sim's reset(): start the board again


def hardware_dir(flash_dir: Path) -> Path:
    """Where a device's hardware description and link state live (beside its flash)."""
    flash_dir = Path(flash_dir).resolve()
    return flash_dir.with_name(flash_dir.name + ".hw")


class SimDevice:
    """``start()`` runs ``main.py`` in ``flash_dir`` (console appended to ``console``, by
    default ``<flash_dir>.log``); ``stop()`` interrupts it like Ctrl-C (the firmware
    disconnects and prints its summary); ``kill()`` is a power cut (SIGKILL)."""

    def __init__(
        self,
        flash_dir: Path,
        heap: str = "72K",
        runtime: str = "auto",
        console: Path | None = None,
        hardware: Hardware | None = None,
        ap: AccessPoint | None = None,
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
        self.hardware = hardware
        self.hw_dir = hardware_dir(self.flash_dir)
        self.ap = ap or (AccessPoint(self.hw_dir) if hardware else None)
        self.watchdog = WatchdogMonitor() if hardware and hardware.watchdog else None
        self.resets = self.watchdog_resets = 0
        self._super: threading.Thread | None = None
        self._stopping = False
        self._code: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()  # a stop against a reset's new process
        if hardware and self.ap:
            wdt = self.watchdog.port if self.watchdog else None
            write_description(self.hw_dir / "hw.json", hardware.describe(self.ap.file, self.link_file, wdt))

    @property
    def link_file(self) -> Path:
        return self.hw_dir / "link"

    def command(self) -> list[str]:
        if self.runtime == "micropython":
            assert self.micropython
            # -m: main.py run as a board runs it, from "" on sys.path (a script's run puts its
            # absolute directory there, and every module's __file__ would carry it).
            return [self.micropython, "-X", f"heapsize={self.heap}", "-m", "main"]
        return [sys.executable, "-u", "-m", "ecoin.sim.compat.run", str(self.flash_dir)]

    def start(self) -> SimDevice:
        if self.running:
            raise RuntimeError(f"{self.flash_dir.name} is already running")
        self._close_log()
        self._log = open(self.console, "ab")  # noqa: SIM115 - owned by the process
        self._stopping, self._code = False, None
        self._done.clear()
        if self.watchdog:
            self.watchdog.disarm()  # power-on: no watchdog yet
        self._spawn()
        self._super = threading.Thread(target=self._supervise, daemon=True, name=f"sim-{self.flash_dir.name}")
        self._super.start()
        return self

    def _spawn(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if self.hardware:
            env["ECOIN_SIM_HW"] = str(self.hw_dir / "hw.json")
            self.link_file.write_text("down")
        if self.runtime == "micropython":
            # A board's path: the flash (the working directory) as "", then .frozen (ssl and
            # friends). Relative, as on a board: each module's __file__ is interned on the
            # heap, and a host's absolute path would cost heap a board never spends.
            env["MICROPYPATH"] = ":.frozen"
        else:
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            self.command(), cwd=self.flash_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def _note(self, text: str) -> None:
        if self._log:
            self._log.write(f"\n[sim] {text}\n".encode())
            self._log.flush()

    def _supervise(self) -> None:
        """The board around the process: its watchdog, and the resets that start it again."""
        assert self.proc
        while True:
            if self.watchdog:
                self.watchdog.poll()
            else:
                time.sleep(0.02)
            code = self.proc.poll()
            if self._stopping:
                if code is not None:
                    break
                continue
            if code is not None and not (code == RESET and self.hardware):
                break
            if code is not None or (self.watchdog and self.watchdog.expired()):
                self._reset(watchdog=code is None)
        self._code = self.proc.wait()
        self._done.set()

    def _reset(self, watchdog: bool) -> None:
        """Starts the board again, unless a stop came meanwhile: under the lock a stop takes,
        so no process is born after the stop has signalled the one it saw."""
        assert self.proc
        with self._lock:
            if self._stopping:
                return
            if watchdog:
                assert self.watchdog
                self.proc.kill()
                self.proc.wait()
                self.watchdog.disarm()
                self.watchdog_resets += 1
                self._note("watchdog reset")
            else:
                self.resets += 1
                self._note("reset")
            self._spawn()

    @property
    def running(self) -> bool:
        return self._super is not None and not self._done.is_set()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def wait(self, timeout: float | None = None) -> int:
        """Waits until the board stops for good (not a reset); its last exit status."""
        if self._super is None:
            raise RuntimeError("not started")
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.command(), timeout or 0)
        self._super.join()
        self._close_log()
        assert self._code is not None
        return self._code

    def stop(self, timeout: float = 10.0) -> int | None:
        """Interrupts the device (SIGINT: KeyboardInterrupt in the firmware); kills it if it
        has not ended after timeout seconds. Returns its exit code."""
        if not self.running:
            return self._finish()
        assert self.proc
        with self._lock:
            self._stopping = True
            ctrlc.interrupt(self.proc)  # as a board takes it: never inside the unix port's C code
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """Cuts the power: SIGKILL, no chance to write anything."""
        with self._lock:
            self._stopping = True
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
        return self._finish()

    def _finish(self) -> int | None:
        if self._super is not None:
            self._super.join()
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

    def settled(self) -> set[bytes]:
        """op_ids of in-doubt records settled since the last boot (settled.bin)."""
        return flash.read_settled(self.flash_dir)

    def __enter__(self) -> SimDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

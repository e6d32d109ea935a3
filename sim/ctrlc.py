"""Ctrl-C for a MicroPython unix-port process, delivered as a board delivers it.

A board's console interrupt only marks a KeyboardInterrupt pending, and the VM raises it
between two bytecodes. The unix port raises it from its SIGINT handler (a longjmp), in the
middle of whatever C code runs: inside a garbage collection that leaves the heap locked for
good ("MemoryError: ... heap is locked" in the firmware's Ctrl-C handler), inside a dict
update that leaves the interpreter corrupt. So the process is stopped, and the SIGINT sent
only while it is parked in a blocking system call (a wait: poll, sleep, recv), where no
such C code is half done; else it is let go on and tried again a moment later."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time

# The waits the firmware blocks in, by system call number (Linux).
_WAITS = {
    "x86_64": {0, 7, 23, 35, 45, 47, 202, 230, 232, 270, 271, 281, 441},
    "aarch64": {22, 63, 72, 73, 98, 101, 115, 207, 212, 441},
}.get(platform.machine(), set())


def _parked(pid: int) -> bool | None:
    """Whether the stopped process sits in a wait; None if the kernel does not say."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            word = f.read().split()[0]
    except (OSError, IndexError):
        return None
    return word.lstrip("-").isdigit() and int(word) in _WAITS


def _stopped(pid: int, timeout: float = 0.5) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "tT":
                    return True
        except OSError:
            return False
        time.sleep(0.0005)
    return False


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Sends Ctrl-C (SIGINT) at a moment a board could take it; after timeout, at any."""
    end = time.monotonic() + timeout
    while _WAITS and proc.poll() is None and time.monotonic() < end:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            parked = _parked(proc.pid) if _stopped(proc.pid) else False
            if parked is None:
                break
            if parked:
                os.kill(proc.pid, signal.SIGINT)  # taken when it resumes, inside the wait
                return
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.001)  # let it run on to its next wait
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)

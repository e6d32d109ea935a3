"""Fixtures of the tools' tests: the installed ``ecoin-provision`` run as a process (plain,
or on a terminal that answers its prompt)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest


class Provision:
    """Runs the installed ``ecoin-provision`` (no stdin, 120 s at most); a non-zero exit
    fails the test with its output unless ``check=False``."""

    path = str(Path(sys.executable).with_name("ecoin-provision"))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.path, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if check and done.returncode != 0:
            pytest.fail(f"ecoin-provision {args[0]} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def on_a_terminal(self, answer: str, *args: str) -> tuple[int, str]:
        """Runs it with a terminal on stdin and stderr, answering its prompt; the exit code
        and what the terminal showed."""
        master, slave = os.openpty()
        proc = subprocess.Popen([self.path, *args], stdin=slave, stderr=slave, stdout=subprocess.DEVNULL)
        os.close(slave)
        os.write(master, answer.encode() + b"\n")  # waits in the terminal's line buffer for input()
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed its side
                    break
            elif proc.poll() is not None:
                break
        os.close(master)
        return proc.wait(timeout=60), seen.decode(errors="replace")


@pytest.fixture
def provision() -> Provision:
    return Provision()

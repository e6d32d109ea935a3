"""Where a bundle goes and where a device's coin store is read from: a board on a serial
port, driven by the real ``mpremote``, or a simulated device's flash directory.

Both offer the same few operations on the flash root, so the rules (ask before replacing a
coin store, write ``state.bin`` last and atomically, verify what landed) are written once,
in ``install``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ecoin.common import files
from ecoin.common.files import write_atomic as write_file
from ecoin.tools.provisioning import flash

from .common import ProvisionError

STORE_FILES = ("config.json", "state.bin", "state.tmp", "doubt.bin", "settled.bin")
TIMEOUT = 300.0  # a slow UART copying a whole bundle
_LS_LINE = re.compile(r"^\s*(\d+)\s+(\S.*)$")


class Target(Protocol):
    label: str

    def files(self) -> dict[str, int]:
        """Name -> size of what is at the flash root (directories end with '/')."""
        ...

    def fetch(self, names: Iterable[str], dest: Path) -> None:
        """Copies those of ``names`` that exist into the local directory ``dest``."""
        ...

    def install(self, src: Path, names: list[str], on_file: Any = None) -> None:
        """Copies ``names`` from ``src``; ``state.bin`` (if among them) last, atomically."""
        ...

    def append(self, name: str, data: bytes) -> None: ...

    def sha256(self, names: Sequence[str]) -> dict[str, str]: ...


def find_mpremote(given: str | None = None) -> str:
    found = given or files.find_program("mpremote", "ECOIN_MPREMOTE")
    if not found:
        raise ProvisionError("mpremote not found: run `make setup` (or pip install mpremote)")
    return found


class SimTarget:
    """A simulated device's flash directory (stop its ``ecoin-sim`` process first)."""

    def __init__(self, flash_dir: str | Path, create: bool = False) -> None:
        self.root = Path(flash_dir)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise ProvisionError(f"{self.root} is not a directory")
        self.label = f"sim:{self.root.resolve()}"

    def files(self) -> dict[str, int]:
        return {
            (e.name + "/" if e.is_dir() else e.name): (0 if e.is_dir() else e.stat().st_size)
            for e in os.scandir(self.root)
        }

    def fetch(self, names: Iterable[str], dest: Path) -> None:
        for name in names:
            if (self.root / name).is_file():
                shutil.copyfile(self.root / name, dest / name)

    def install(self, src: Path, names: list[str], on_file: Any = None) -> None:
        for name in names:
            if on_file:
                on_file(name)
            if (src / name).is_dir():
                shutil.copytree(src / name, self.root / name, dirs_exist_ok=True)
            else:
                write_file(self.root / name, (src / name).read_bytes(), (src / name).stat().st_mode & 0o777)

    def append(self, name: str, data: bytes) -> None:
        with open(self.root / name, "ab") as f:
            f.write(data)

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        return {n: hashlib.sha256((self.root / n).read_bytes()).hexdigest() for n in names}


class BoardTarget:
    """A MicroPython board on a serial port (or the simulated ReplBoard's pty), through
    ``mpremote connect PORT``. Each command interrupts a running program and soft-resets
    the board into the raw REPL, as mpremote always does."""

    def __init__(self, port: str, mpremote: str | None = None) -> None:
        self.port = port
        self.mpremote = find_mpremote(mpremote)
        self.label = f"board:{port}"

    def run(self, *args: str, cwd: Path | None = None, on_line: Any = None) -> str:
        """One mpremote command; its stdout (lines passed to ``on_line`` as they come)."""
        cmd = [self.mpremote, "connect", self.port, *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its "cp NAME" lines as they happen
        what = " ".join(args[:2])
        with tempfile.TemporaryFile("w+") as err:  # a file: a chatty stderr cannot block it
            try:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            except OSError as exc:
                raise ProvisionError(f"cannot run {self.mpremote}: {exc}") from exc
            timer = threading.Timer(TIMEOUT, proc.kill)  # a board that never answers
            timer.start()
            try:
                out = []
                assert proc.stdout is not None
                for line in proc.stdout:  # ends when mpremote exits
                    out.append(line)
                    if on_line:
                        on_line(line.rstrip("\n"))
                proc.wait()
            finally:
                timer.cancel()
            err.seek(0)
            message = err.read().strip()
        if proc.returncode < 0:
            raise ProvisionError(f"mpremote {what} on {self.port}: no answer in {TIMEOUT:.0f}s")
        if proc.returncode:
            why = (message.splitlines() or ["(no message)"])[-1]
            raise ProvisionError(f"mpremote {what} on {self.port} failed: {why}")
        return "".join(out)

    def files(self) -> dict[str, int]:
        out = {}
        for line in self.run("fs", "ls", ":").splitlines()[1:]:
            m = _LS_LINE.match(line)
            if m:
                out[m.group(2)] = int(m.group(1))
        return out

    def fetch(self, names: Iterable[str], dest: Path) -> None:
        present = self.files()
        wanted = [f":{n}" for n in names if n in present]
        if wanted:
            self.run("fs", "cp", *wanted, f"{dest}/")

    def install(self, src: Path, names: list[str], on_file: Any = None) -> None:
        first = [n for n in names if n != "state.bin"]

        def seen(line: str) -> None:
            if on_file and line.startswith("cp "):
                on_file(line[3:].split(" ")[0])

        if first:
            self.run("fs", "cp", "-r", *first, ":", cwd=src, on_line=seen)
        if "state.bin" in names:
            if on_file:
                on_file("state.bin")
            # state.tmp then a rename: the board never sees half a state.bin (littlefs
            # renames atomically; FAT cannot replace, so there remove first, as the firmware does).
            self.run(
                "fs",
                "cp",
                "state.bin",
                ":state.tmp",
                "+",
                "exec",
                "import os\ntry:\n os.rename('state.tmp','state.bin')\nexcept OSError:\n"
                " os.remove('state.bin')\n os.rename('state.tmp','state.bin')",
                cwd=src,
            )

    def append(self, name: str, data: bytes) -> None:
        self.run("exec", f"f=open({name!r},'ab')\nf.write({data!r})\nf.close()")

    def sha256(self, names: Sequence[str]) -> dict[str, str]:
        out = self.run("fs", "sha256sum", *[f":{n}" for n in names])
        digests = [line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[0-9a-f]{64}\s*", line)]
        if len(digests) != len(names):
            raise ProvisionError(f"mpremote sha256sum on {self.port} answered {out!r}")
        return dict(zip(names, digests, strict=True))


def target(
    port: str | None = None, flash_dir: str | Path | None = None, mpremote: str | None = None
) -> Target:
    if (port is None) == (flash_dir is None):
        raise ProvisionError("give exactly one of a port (a board) or a flash directory (a simulator)")
    if port is not None:
        return BoardTarget(port, mpremote)
    return SimTarget(flash_dir)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Store:
    """What a device holds, read from its flash: its config, its coin store, its doubts."""

    config: dict[str, Any] | None
    state: flash.FlashState | None
    doubts: list[flash.Doubt]
    settled: set[bytes]  # op_ids marked settled on the device (firmware that supports it)
    pending_coins: list[bytes] = field(default_factory=list)  # every coin the pending operation paid

    @property
    def device_id(self) -> str | None:
        return None if self.config is None else self.config.get("device_id")

    def describe(self) -> str:
        if self.state is None:
            return "no coin store"
        open_doubts = [d for d in self.doubts if d.op_id not in self.settled]
        pending = ", 1 operation pending" if self.state.pending_coin else ""
        return (
            f"device {self.device_id or '?'}: {self.state.left} coins left, "
            f"{len(open_doubts)} in doubt{pending}"
        )


def read_store(t: Target) -> Store:
    """Copies the small store files off the target and reads them with ecoin.tools.provisioning.flash."""
    import json

    with tempfile.TemporaryDirectory(prefix="ecoin-store-") as tmp:
        local = Path(tmp)
        t.fetch(STORE_FILES, local)
        config = None
        if (local / "config.json").exists():
            try:
                config = dict(json.loads((local / "config.json").read_text()))
            except ValueError as exc:
                raise ProvisionError(f"{t.label}: config.json is not valid JSON") from exc
        try:
            state = flash.read_state(local)
        except flash.FlashError as exc:
            if (local / "state.bin").exists() or (local / "state.tmp").exists():
                raise ProvisionError(f"{t.label}: {exc}") from exc
            state = None
        doubts = flash.read_in_doubt(local)
        settled = flash.read_settled(local)
        pending = [state.pending_coin] if state and state.pending_coin else []
        if state and state.pending_op and state.pending > 1:  # a priced operation: the others
            t.fetch([f"coins.{state.gen}.bin"], local)  # are in the coin file, not in state.bin
            pending = flash.read_coins(local, state)[state.next - state.pending : state.next]
    return Store(config, state, doubts, settled, pending)

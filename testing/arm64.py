"""The gateway as a Raspberry Pi runs it, on this machine: arm64 programs under QEMU user
emulation, in the Debian arm64 root that ``deploy/arm64-root.sh`` builds once per machine.

    pi = Arm64Root.prepare(checkout, tmp / "pi")      # root ready, ecoin's wheel installed
    pi.run(["ecoin-gateway", "--help"])                # an arm64 program; paths as seen inside
    gw = pi.popen(["ecoin-gateway", "serve", "--config", pi.inside(tmp / "pi" / "gw.toml")], log)

Inside, ``workdir`` is ``/ecoin/work`` (``inside()`` translates a host path under it), the
checkout is ``/ecoin/src`` (read-only) and the venv ``/opt/ecoin/.venv`` is this run's own
copy of the root's. The network is the host's: servers started inside answer on the host's
127.0.0.1, and the host's pseudo-terminals are the same ones inside. The cached root itself
is never written. Only processes started here are ever stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ecoin.testing.servers import stop

VENV = "/opt/ecoin/.venv"


class Arm64Root:
    def __init__(self, script: Path, root: Path, workdir: Path, src: Path) -> None:
        self.script = script
        self.root = root
        self.workdir = workdir
        self.src = src

    @classmethod
    def prepare(cls, src: Path, workdir: Path, timeout: float = 3600.0) -> Arm64Root:
        """Builds the root if this machine has none for the current dependency list (slow
        once), then installs ecoin into this run's venv the README's way: from its wheel,
        with the ``gateway`` extra (offline: the dependencies are already in the venv)."""
        src = Path(src).resolve()
        workdir = Path(workdir).resolve()
        script = src / "deploy" / "arm64-root.sh"
        done = subprocess.run(
            ["sh", str(script)], stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, check=True
        )
        root = Path(done.stdout.strip().splitlines()[-1])
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)  # the root's mosquitto user reads its configuration in here
        opt = workdir / "opt"
        if not (opt / ".venv").exists():
            shutil.copytree(root / "opt" / "ecoin", opt, symlinks=True)
        pi = cls(script, root, workdir, src)
        pi.install(pi.build_wheel())
        return pi

    def build_wheel(self) -> Path:
        """ecoin's wheel, built as `make wheel` builds it."""
        dist = self.workdir / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
            + ["-w", str(dist), str(self.src)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        return next(dist.glob("ecoin-*.whl"))

    def install(self, wheel: Path) -> None:
        """The README's install command for a Raspberry Pi, verbatim; PIP_NO_INDEX proves it
        needed nothing beyond what the root already holds."""
        spec = f"{self.inside(wheel)}[gateway]"
        done = self.run(
            ["env", "PIP_NO_INDEX=1", f"{VENV}/bin/pip", "install", "--quiet", "--only-binary=:all:", spec],
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip install {spec} failed in the arm64 root: {done.stdout}{done.stderr}")

    def inside(self, path: Path | str) -> str:
        """The path inside the root of a host path under ``workdir``."""
        rel = Path(os.path.abspath(path)).relative_to(self.workdir)  # a link stays a link
        return str(Path("/ecoin/work") / rel)

    def command(self, argv: list[str], cwd: str = "/") -> list[str]:
        root, work, src = str(self.root), str(self.workdir), str(self.src)
        return ["sh", str(self.script), "enter", root, work, src, "--cwd", cwd, "--", *argv]

    def run(
        self, argv: list[str], timeout: float = 120.0, cwd: str = "/"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, cwd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def popen(self, argv: list[str], log: Path, cwd: str = "/") -> subprocess.Popen[bytes]:
        """Starts an arm64 program (its process id is the program's own, so ``stop()``'s
        SIGTERM reaches it), output appended to ``log``."""
        with open(log, "ab") as out:
            return subprocess.Popen(
                self.command(argv, cwd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        stop(proc, timeout)


def wait_serving(
    health_port: int, proc: subprocess.Popen[bytes], services: set[str], log: Path, timeout: float = 120.0
) -> float:
    """Waits until a gateway's /healthz answers 200 with every one of ``services`` live (its
    links are up and the analysts' announcements seen); returns the seconds it took. Under
    emulation a start takes seconds, so this waits on the condition, never a fixed time."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5) as r:
                health = json.loads(r.read())
            if health.get("ok") and services <= set(health.get("services", [])):
                return time.monotonic() - started
        except (OSError, ValueError):
            pass  # not listening yet, or 503 while a link is still down
        time.sleep(0.1)
    raise TimeoutError(f"the gateway was not serving in {timeout}s: {log.read_text()[-3000:]}")


def is_emulated(pid: int) -> bool:
    """True if the process is an arm64 program run by QEMU (binfmt_misc names the emulator
    as the process's executable)."""
    try:
        return "qemu-aarch64" in Path(f"/proc/{pid}/exe").readlink().name
    except OSError:
        return False

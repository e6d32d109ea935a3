"""Real servers for tests, benchmarks and the demo: Mosquitto and PostgreSQL on free ports.

Each runner starts its own process in a private directory, waits until it accepts
connections, and stops it (and only it) on exit. Nothing here touches a system service.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def eventually(cond: Callable[[], object], timeout: float = 15.0, every: float = 0.02) -> bool:
    """Polls ``cond`` until it is true (True) or ``timeout`` s have passed (its last answer),
    for a test that asserts with its own message: ``assert eventually(...), dev.output()``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return bool(cond())
        time.sleep(every)
    return True


def wait_until(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    """Polls ``cond`` until it is true; AssertionError naming ``what`` after ``timeout`` s."""
    if not eventually(cond, timeout):
        raise AssertionError(f"timed out waiting for {what}")


def stop_paho(client: Any) -> None:
    """disconnect() then loop_stop() of a paho client started with loop_start(). paho 2.2's
    loop_stop checks its network thread, then joins it; a thread that ends by itself in
    between (the disconnect makes it end) has set it to None by then, and the join raises
    AttributeError. That thread is over, which is all loop_stop waits for."""
    client.disconnect()
    try:
        client.loop_stop()
    except AttributeError:
        pass


def find_program(name: str, *extra_dirs: str) -> str:
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None
    )
    if not path:
        raise FileNotFoundError(f"{name} not found; run `make setup` (it installs the Debian packages)")
    return path


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Mosquitto:
    """A private Mosquitto broker. ``config`` is the body of mosquitto.conf; the runner adds
    nothing but what it needs to run unprivileged in ``workdir``."""

    def __init__(self, workdir: Path, config: str, port: int) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def plain(cls, workdir: Path, port: int | None = None) -> Mosquitto:
        """An anonymous plain-TCP broker on loopback, for tests that are not about the broker."""
        port = port or free_port()
        # The generated configuration's queue (gateway/brokerconf.py): a subscriber that falls
        # behind by fewer messages loses none (Mosquitto's default, 1,000, drops them unseen).
        conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000\n"
        return cls(workdir, conf, port)

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        extra = "persistence false\nlog_dest stderr\nlog_type error\n"
        if os.geteuid() == 0 and "\nuser " not in f"\n{self.config}":
            # As root Mosquitto would switch to the 'mosquitto' user before reading the test
            # PKI's 0600 keys; a throwaway loopback broker keeps the caller's identity.
            extra += "user root\n"
        conf.write_text(self.config + extra)
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        program = find_program("mosquitto", "/usr/sbin")
        self.proc = subprocess.Popen([program, "-c", str(conf)], stdout=log, stderr=log)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()}"
            ) from None
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pg_bin(name: str) -> str:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return find_program(name, *(str(d) for d in dirs))


@contextmanager
def postgres(workdir: Path, port: int | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields its DSN. initdb refuses root, so as root the
    cluster runs as the unprivileged 'postgres' (or 'nobody') user."""
    port = port or free_port()
    data = workdir / "pgdata"
    workdir.mkdir(parents=True, exist_ok=True)
    uid = gid = None
    if os.geteuid() == 0:
        pw = pwd.getpwnam(next(u for u in ("postgres", "nobody") if _has_user(u)))
        uid, gid = pw.pw_uid, pw.pw_gid
        os.chown(workdir, uid, gid)

    def pg(*args: str, check: bool = True) -> None:
        subprocess.run([_pg_bin(args[0]), *args[1:]], check=check, capture_output=True, user=uid, group=gid)

    pg("initdb", "-D", str(data), "-A", "trust", "-U", "ecoin", "--no-sync")
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1"
    pg("pg_ctl", "-D", str(data), "-o", opts, "-l", str(workdir / "pg.log"), "-w", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "ecoin", "ecoin_test")
        yield f"postgresql://ecoin@127.0.0.1:{port}/ecoin_test"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False

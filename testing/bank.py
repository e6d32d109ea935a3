"""A real bank for tests, benchmarks and the demo: ``ecoin-bank serve`` in its own process.

    bank = BankProcess(tmp_path / "bank", pki_dir).start()     # SQLite, free ports
    bank = BankProcess(tmp_path / "b2", pki_dir, db=dsn).start() # or PostgreSQL
    bank.admin.create_account("olive", "owner")                  # a ready admin client
    olive = bank.client("owner", "olive")                        # any party of the PKI
    bank.kill()   # SIGKILL;  bank.start() again;  bank.stop() (SIGTERM)
    old = BankProcess(d, pki_dir, env={"PYTHONPATH": tree})     # another tree's bank (bench)

It writes its own ``bank.toml`` (master key and SQLite file in ``workdir``), runs
``ecoin-bank init``, and waits until the API answers. Only its own process is ever stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

from ecoin.common import crypto
from ecoin.common.bank_client import BankClient, Unavailable
from ecoin.protocol import session, wire
from ecoin.testing.servers import free_port, stop

Fields = tuple[bytes, bytes, bytes, str, bytes, bytes]


def operation_item(
    public: tuple[int, int],
    kid: bytes,
    coin: bytes,
    service: str,
    op_id: bytes | None = None,
    readings: bytes = b"{}",
) -> Fields:
    """What an analyst sends the bank for a device's OPERATION that spends ``coin``:
    (kid, header, op_id, service, digest, tag), ready for a ``RedeemItem`` (or the bank's
    ``keys.Item``). The operation is sealed as the device seals it."""
    op_id, _k_enc, _k_mac, frame = session.seal_operation(
        crypto, public, kid, coin, service, readings, op_id=op_id
    )
    _, kid, service, header, _ct, tag = wire.decode_operation(frame)
    return kid, bytes(header), bytes(op_id), service, session.operation_digest(crypto, frame), bytes(tag)


class BankProcess:
    def __init__(
        self,
        workdir: Path,
        pki_dir: Path,
        db: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}  # env: another tree, say
        self.pki = Path(pki_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.db = db or str(self.workdir / "bank.sqlite3")
        self.config = self.workdir / "bank.toml"
        self.log = self.workdir / "bank.log"
        table = {
            "listen": "127.0.0.1",
            "port": self.port,
            "metrics_port": self.metrics_port,
            "db": self.db,
            "pki": str(self.pki),
            "master_key": str(self.workdir / "master.key"),
            "workers": workers,
            **settings,
        }
        self.config.write_text(tomli_w.dumps({"bank": table}))
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: BankClient | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, role: str, name: str, **kwargs: Any) -> BankClient:
        base = self.pki / role / name
        return BankClient(self.url, f"{base}.crt", f"{base}.key", self.pki / "ca.crt", **kwargs)

    @property
    def admin(self) -> BankClient:
        if self._admin is None:
            self._admin = self.client("admin", "admin")
        return self._admin

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs ``ecoin-bank -c bank.toml ARGS`` and returns its result."""
        cmd = [sys.executable, "-m", "ecoin.bank.cli", "-c", str(self.config), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=self.env)
        if check and done.returncode != 0:
            raise RuntimeError(f"ecoin-bank {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def start(self, timeout: float = 30.0) -> BankProcess:
        if not (self.workdir / "master.key").exists():
            self.cli("init")
        deadline = time.monotonic() + timeout
        offset = self._spawn()
        with self.client("admin", "admin", timeout=2.0) as probe:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    tail = self.log.read_bytes()[offset:].decode(errors="replace")
                    if "address already in use" in tail and time.monotonic() < deadline:
                        # A restart on the same port: for a moment it may still be taken (an
                        # outgoing connection's ephemeral port, the old process's last child).
                        time.sleep(0.5)
                        offset = self._spawn()
                        continue
                    raise RuntimeError(f"the bank exited ({self.proc.returncode}): {tail[-3000:]}")
                try:
                    probe.healthz()
                    return self
                except Unavailable:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"the bank did not answer in {timeout}s") from None
                    time.sleep(0.1)

    def _spawn(self) -> int:
        """Starts ``serve``; returns where its lines begin in the log."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "ecoin.bank.cli", "-c", str(self.config), "serve"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        log.close()
        return offset

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._drop_admin()

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)
        self._drop_admin()

    def _drop_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __enter__(self) -> BankProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def slow_job(job: tuple[str, float]) -> str:
    """A worker pool job (``bank.workers``) that takes ``job[1]`` seconds, for tests of
    the order in which the pool runs jobs; spawned workers import it from here."""
    time.sleep(job[1])
    return job[0]


def no_init() -> None:
    """A worker pool's ``init`` with nothing to load."""

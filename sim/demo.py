"""``make demo``: the whole of ecoin on this machine, end to end, then a summary.

It generates the PKI; starts Mosquitto with the generated configuration (TLS listeners,
one password per device, a certificate and a password per analyst and gateway, ACLs), the
bank (SQLite), two analysts (``average`` and ``stats``) and the gateway; provisions
simulated devices that run the real firmware on the MicroPython unix port under a
board-like heap cap; runs them until each has completed
its operations while showing live progress; shows one more device whose owner's policy
refuses its service (the bank refuses, the analyst says why, the device gets the generic
error, the owner's claim refunds the coin); audits the bank; prints the owner's statement,
a summary and, as the very last line, one line of JSON. Everything it started is stopped,
on Ctrl-C too.

The dashboard (``ecoin-dashboard``) runs beside them from the start: the demo prints its
address and where the owner's and operator's passwords are. The last device is provisioned
by an installer (``ivan``) and claimed by the owner with its sticker's claim URI, as a buyer
would. ``--stay`` keeps everything running after the summary, for a look, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from ecoin.common.bank_client import BankClient
from ecoin.sim import demo_policy as policy_demo
from ecoin.sim.device import SimDevice
from ecoin.testing.analyst import AnalystProcess
from ecoin.testing.bank import BankProcess
from ecoin.testing.broker import generated_broker, password_file
from ecoin.testing.dashboard import DashboardProcess
from ecoin.testing.servers import free_port, stop, wait_for_port
from ecoin.tools import pki
from ecoin.tools.provisioning import sticker
from ecoin.tools.provisioning.bundle import Broker, provision_device
from ecoin.tools.provisioning.install import install_bundle
from ecoin.tools.provisioning.targets import SimTarget

ANALYSTS = {"alice": ["average"], "bob": ["stats"]}
# The priced service: carol sells "anomaly" at 3 coins an operation, to one device that
# accepts up to 3 (its max_price), paid with 3 coins in one header (docs/ANALYSTS.md).
PRICED_ANALYST, PRICED_SERVICE, PRICE, PRICED_DEVICE = "carol", "anomaly", 3, "dev-priced"
OWNER = "olive"
INSTALLER = "ivan"  # provisions the last device; the owner claims it by its QR code
OPERATOR = "ops"
GATEWAY = "gw1"
RESULT = re.compile(rb"collector: op \S+ result ")
FAILED = re.compile(rb"collector: op \S+ failed ")


@dataclass
class Device:
    name: str
    service: str
    sim: SimDevice
    ok: int = 0
    failed: int = 0
    left: int = 0
    done: bool = False


@dataclass
class Demo:
    workdir: Path
    devices: int
    ops: int
    heap: str
    runtime: str
    quiet: bool = False  # no live progress lines (benchmarks)
    batch_seconds: float = 0.1  # how often each device buys an analysis
    priced_ops: int = 0  # operations of the device that buys the priced service (0: no such device)
    op_timeout: float = 20.0  # how long a device waits for its result (the gateway's too)
    stay: bool = False  # keep everything running after the summary, until Ctrl-C
    after: Callable[[Demo], None] | None = None  # called with everything still running
    elapsed: float = 0.0
    dashboard: DashboardProcess | None = None
    health: dict[str, str] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    fleet: list[Device] = field(default_factory=list)
    refused: Device | None = None  # the device whose owner's policy refuses its service
    priced: Device | None = None  # the device that pays 3 coins an operation (priced_ops)
    policy_refused: bool = False
    statement: dict[str, Any] = field(default_factory=dict)  # the owner's, for today
    gateway_health_port: int = 0  # its /metrics and /healthz, once started

    def say(self, text: str) -> None:
        print(f"demo: {text}", flush=True)

    def run(self) -> dict[str, Any]:
        with self.stack:
            pki_dir = self.make_pki()
            broker = self.start_broker(pki_dir)
            bank = self.stack.enter_context(BankProcess(self.workdir / "bank", pki_dir, workers=1))
            self.say(f"bank listening on {bank.url} (SQLite)")
            self.open_accounts(bank)
            for analyst, services in self.analysts().items():
                offers = {PRICED_SERVICE: {"price": PRICE}} if analyst == PRICED_ANALYST else {}
                proc = AnalystProcess(
                    self.workdir / "analyst" / analyst,
                    pki_dir,
                    broker["service_port"],
                    self.analyst_bank(analyst, bank, pki_dir),
                    services,
                    analyst,
                    offers=offers,
                )
                self.stack.enter_context(proc)
                terms = f" at {PRICE} coins an operation" if offers else ""
                self.say(f"analyst {analyst} offers {', '.join(services)}{terms}")
                self.health[f"analyst {analyst}"] = f"http://127.0.0.1:{proc.metrics_port}/healthz"
            self.start_gateway(pki_dir, broker["service_port"], bank.url)
            self.start_dashboard(pki_dir, bank)
            self.provision(pki_dir, bank, broker)
            started = time.monotonic()
            self.watch(bank)
            self.elapsed = elapsed = time.monotonic() - started
            with bank.client("owner", OWNER) as owner:
                if self.refused is not None:
                    self.policy_refused = policy_demo.show_refusal(
                        self.say, self.refused.sim, owner, self.workdir / "analyst"
                    )
                self.statement = owner.statement()
            audit = bank.cli("audit", check=False)
            credits = self.credits(bank)
            if self.after:
                self.after(self)
            result = self.summary(elapsed, credits, audit.returncode == 0, audit.stdout + audit.stderr)
            if self.stay:
                self.linger()
        return result

    def start_dashboard(self, pki_dir: Path, bank: BankProcess) -> None:
        self.health["bank"] = f"http://127.0.0.1:{bank.metrics_port}/healthz"
        users = {OWNER: "owner", OPERATOR: "operator"}
        where = self.workdir / "dashboard"
        dash = DashboardProcess(where, pki_dir, bank.url, users, self.health, refresh_s=2.0)
        self.dashboard = self.stack.enter_context(dash)
        for name, password in dash.passwords.items():
            (dash.workdir / f"{name}.pass").write_text(password + "\n")
            (dash.workdir / f"{name}.pass").chmod(0o600)
        self.say(
            f"dashboard on {dash.url} (log in as {OWNER}, or as operator {OPERATOR}; their passwords are in"
            f" {where}/{OWNER}.pass and {OPERATOR}.pass)"
        )

    def linger(self) -> None:
        url = self.dashboard.url if self.dashboard else "?"
        self.say(f"everything keeps running (--stay): the dashboard is on {url}; Ctrl-C stops it all")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print()

    def analyst_bank(self, analyst: str, bank: BankProcess, pki_dir: Path) -> str:
        """The bank's URL as an analyst is given it (a test puts a faulty path in between)."""
        return bank.url

    def analysts(self) -> dict[str, list[str]]:
        return {**ANALYSTS, PRICED_ANALYST: [PRICED_SERVICE]} if self.priced_ops else ANALYSTS

    def watched(self) -> list[Device]:
        """The fleet and the priced device (the policy demo's device is shown on its own)."""
        return [*self.fleet, *([self.priced] if self.priced else [])]

    def make_pki(self) -> Path:
        pki_dir = self.workdir / "pki"
        pki.init(pki_dir)
        for analyst in self.analysts():
            pki.issue(pki_dir, "analyst", analyst)
        pki.issue(pki_dir, "gateway", GATEWAY)
        pki.issue(pki_dir, "owner", OWNER)
        pki.issue(pki_dir, "owner", INSTALLER)
        self.say(f"PKI ready in {pki_dir} (CA, bank, broker, analysts, gateway, owner, coin key)")
        return pki_dir

    def start_broker(self, pki_dir: Path) -> dict[str, Any]:
        broker = generated_broker(
            self.workdir / "broker",
            pki_dir,
            analysts=self.analysts(),
            gateways=[GATEWAY],
            devices=[
                *(self.device_name(i) for i in range(self.devices)),
                policy_demo.DEVICE,
                *([PRICED_DEVICE] if self.priced_ops else []),
            ],
            device_tls=False,
        )
        conf, paths = broker.conf, broker.paths
        self.stack.enter_context(broker.mosquitto)
        wait_for_port(conf.device_port)
        self.say(
            f"Mosquitto: devices on {conf.device_port} (passwords; plain TCP on loopback: the unix port has "
            f"no ssl), services on {conf.service_port} (mutual TLS and a password each)"
        )
        return {
            "device_port": conf.device_port,
            "service_port": conf.service_port,
            "credentials": paths["credentials"],
        }

    def open_accounts(self, bank: BankProcess) -> None:
        admin = bank.admin
        admin.create_account(OWNER, "owner")
        admin.fund(OWNER, (self.devices + bool(self.priced_ops)) * 1000 + 1000, request_id="demo-funding")
        admin.create_account(INSTALLER, "owner")
        admin.fund(INSTALLER, 1000, request_id="demo-installer")
        for analyst, services in self.analysts().items():
            admin.create_account(analyst, "analyst", services)

    def start_gateway(self, pki_dir: Path, port: int, bank_url: str) -> None:
        side = {
            "host": "127.0.0.1",
            "port": port,
            "tls": True,
            "ca": str(pki_dir / "ca.crt"),
            "cert": str(pki_dir / "gateway" / f"{GATEWAY}.crt"),
            "key": str(pki_dir / "gateway" / f"{GATEWAY}.key"),
            "password_file": str(password_file(pki_dir, GATEWAY)),  # the broker's secrets/gw1.password
        }
        health = free_port()
        table = {
            "gateway_id": GATEWAY,
            "op_timeout_s": self.op_timeout,
            "edge": side,
            "upstream": side,
            "bank": {"url": bank_url, "ca": side["ca"], "cert": side["cert"], "key": side["key"]},
            "queue": {"path": str(self.workdir / "gateway" / "queue.sqlite")},
            "limits": {"rate_per_s": 100.0, "burst": 100},
            "health": {"port": health},
        }
        gw_dir = self.workdir / "gateway"
        gw_dir.mkdir(parents=True, exist_ok=True)
        (gw_dir / "gateway.toml").write_text(tomli_w.dumps({"gateway": table}))
        log = open(gw_dir / "gateway.log", "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "ecoin.gateway.cli", "serve", "--config", str(gw_dir / "gateway.toml")]
        with _interrupts_after():
            proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            self.stack.callback(stop, proc)
        log.close()
        wait_for_port(health)
        self.health[f"gateway {GATEWAY}"] = f"http://127.0.0.1:{health}/healthz"
        self.gateway_health_port = health
        self.say(f"gateway {GATEWAY} routing (health on http://127.0.0.1:{health}/healthz)")

    @staticmethod
    def device_name(i: int) -> str:
        return f"dev-{i + 1:02d}"

    def provision(self, pki_dir: Path, bank: BankProcess, broker: dict[str, Any]) -> None:
        owner, installer = bank.client("owner", OWNER), bank.client("owner", INSTALLER)
        with owner, installer:
            for i in range(self.devices):
                service = [s for svcs in ANALYSTS.values() for s in svcs][i % 2]
                last = i == self.devices - 1
                self.fleet.append(
                    self.make_device(
                        installer if last else owner, self.device_name(i), service, broker, self.ops, i + 1,
                        claim_by=owner if last else None, bank_url=bank.url,
                    )
                )  # fmt: skip
            self.refused = self.make_device(owner, policy_demo.DEVICE, policy_demo.SERVICE, broker, 1, 99, 5)
            if self.priced_ops:
                self.priced = self.make_device(
                    owner, PRICED_DEVICE, PRICED_SERVICE, broker, self.priced_ops, 98, max_price=PRICE
                )
            policy_demo.set_policy(self.say, owner)
        self.say(f"provisioned {self.devices} devices with 1000 coins each; starting them ({self.heap} heap)")
        for dev in [*self.watched(), self.refused]:
            with _interrupts_after():
                self.stack.callback(dev.sim.stop)
                dev.sim.start()

    def make_device(
        self,
        owner: BankClient,
        name: str,
        service: str,
        broker: dict[str, Any],
        ops: int,
        seed: int,
        coins: int = 1000,
        claim_by: BankClient | None = None,
        bank_url: str = "",
        max_price: int = 1,
    ) -> Device:
        """Provisions and installs one device; ``claim_by`` (an owner) then claims it with
        its sticker's URI, as a buyer scans it."""
        bundle = provision_device(
            owner,
            name,
            service,
            coins=coins,
            out_dir=self.workdir / "devices",
            broker=Broker(port=broker["device_port"], tls=False, credentials=broker["credentials"]),
            config={
                "sample_interval": self.batch_seconds / 10,
                "batch_seconds": self.batch_seconds,
                "batch_max": 32,
                "max_ops": ops,
                "op_timeout": self.op_timeout,
                "seed": seed,
                "max_price": max_price,  # the most it pays: the service's price, no more
            },
        )
        if claim_by is not None:
            uri = sticker.offer(owner, name, bank_url)
            sticker.write(uri, bundle / sticker.STICKER)
            claim_by.claim_device(uri.device_id, uri.secret)
            self.say(f"{name} provisioned by {INSTALLER}, claimed by {OWNER} with its QR code's URI")
        flash = self.workdir / "flash" / name
        install_bundle(bundle, SimTarget(flash, create=True))
        return Device(name, service, SimDevice(flash, heap=self.heap, runtime=self.runtime), left=coins)

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        deadline = time.monotonic() + timeout
        tty = sys.stdout.isatty()
        last = 0.0
        while time.monotonic() < deadline:
            finished = not any(d.sim.running for d in self.watched())
            if finished or (not self.quiet and (tty or time.monotonic() - last > 2)):
                self.count()
                if not self.quiet:
                    self.progress(bank, tty)
                last = time.monotonic()
            if finished:
                break
            time.sleep(0.25)
        if tty and not self.quiet:
            print()

    def count(self) -> None:
        for dev in self.watched():
            out = dev.sim.output().encode()
            dev.ok, dev.failed = len(RESULT.findall(out)), len(FAILED.findall(out))
            dev.left = dev.sim.state().left
            dev.done = not dev.sim.running

    def progress(self, bank: BankProcess, tty: bool) -> None:
        ops = {PRICED_DEVICE: self.priced_ops}
        parts = [
            f"{d.name} {d.ok + d.failed}/{ops.get(d.name, self.ops)} ({d.left} coins)" for d in self.watched()
        ]
        credits = self.credits(bank)
        line = " | ".join(parts) + " | earnings " + ", ".join(f"{k} {v}" for k, v in credits.items())
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)

    @staticmethod
    def credits(bank: BankProcess) -> dict[str, int]:
        return {a["id"]: int(a["balance"]) for a in bank.admin.accounts() if a["kind"] == "analyst"}

    def summary(
        self, elapsed: float, credits: dict[str, int], audit_ok: bool, audit_text: str
    ) -> dict[str, Any]:
        ok = sum(d.ok for d in self.fleet)
        failed = sum(d.failed for d in self.fleet)
        runtime = self.fleet[0].sim.runtime if self.fleet else self.runtime
        print()
        print(
            f"ecoin demo: {len(self.fleet)} devices, {ok} operations answered, {failed} failed,"
            f" in {elapsed:.1f}s"
        )
        for d in self.fleet:
            print(f"  {d.name}  service {d.service:<8} ok {d.ok:>3}  failed {d.failed}  coins left {d.left}")
        priced = self.priced_summary(credits)
        if priced:
            print(
                f"  priced service {PRICED_SERVICE}: {PRICE} coins an operation; {PRICED_DEVICE} paid"
                f" {priced['coins_paid']} coins for {priced['ops_ok']} operations, {PRICED_ANALYST} earned"
                f" {priced['earned']}"
            )
        print(f"  analyst earnings: {', '.join(f'{k} {v}' for k, v in credits.items())}")
        print(f"  bank audit: {'passed' if audit_ok else 'FAILED'}")
        if self.dashboard:
            kept = "kept running" if self.stay else "stops with the demo; --stay keeps it"
            print(f"  dashboard: {self.dashboard.url} ({kept})")
        if not audit_ok:
            print(audit_text)
        print(f"  firmware ran on {runtime} with a {self.heap} heap; logs in {self.workdir}")
        if self.statement:
            print("\n".join(policy_demo.statement_lines(self.statement)))
        return {
            "devices": len(self.fleet),
            "ops_ok": ok,
            "ops_failed": failed,
            "coins_left": sum(d.left for d in self.fleet),
            "analyst_credits": sum(credits.values()),
            "interpreter": runtime,
            "heap_limit": self.heap,
            "audit_ok": audit_ok,
            "policy_refused": self.policy_refused,
            **({"priced": priced} if priced else {}),
        }

    def priced_summary(self, credits: dict[str, int]) -> dict[str, Any]:
        """The priced device's figures (empty without one): coins it paid, what carol earned."""
        dev = self.priced
        if dev is None:
            return {}
        return {
            "service": dev.service,
            "price": PRICE,
            "ops_ok": dev.ok,
            "ops_failed": dev.failed,
            "coins_paid": 1000 - dev.left,
            "earned": credits.get(PRICED_ANALYST, 0),
        }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_after() -> Iterator[None]:
    """Ctrl-C or SIGTERM during a start is taken once it is over: raised inside Popen or
    between a start and its stop's registration, it would leave a process running."""
    came: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: came.append(signum)) for sig in _STOPS}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if came:
        raise KeyboardInterrupt


_STOPS = (signal.SIGINT, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ecoin.sim.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=5, help="simulated devices (default 5)")
    p.add_argument("--ops", type=int, default=20, help="operations per device (default 20)")
    p.add_argument(
        "--priced-ops",
        type=int,
        default=5,
        help="operations of the device paying 3 coins each (default 5; 0: none)",
    )
    p.add_argument("--heap", default="72K", help="MicroPython heap cap per device (default 72K)")
    p.add_argument("--runtime", default="auto", choices=["auto", "micropython", "cpython"])
    p.add_argument("--workdir", default="build/demo", help="where everything is written (wiped first)")
    p.add_argument("--stay", action="store_true", help="keep everything running after the summary (Ctrl-C)")
    args = p.parse_args(argv)
    os.umask(0o077)  # the ledger, the keys and the logs are the owner's alone
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    demo = Demo(
        workdir, args.devices, args.ops, args.heap, args.runtime, stay=args.stay, priced_ops=args.priced_ops
    )
    # Ctrl-C and SIGTERM both unwind through the exit stack, which stops what was started
    # (also when the caller left SIGINT ignored, as shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = demo.run()
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    ok = result["ops_failed"] == 0 and result["audit_ok"] and result["ops_ok"] == args.devices * args.ops
    ok = ok and result["policy_refused"]
    priced = result.get("priced")
    if priced:
        ok = ok and priced["ops_ok"] == args.priced_ops and priced["earned"] == priced["coins_paid"]
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

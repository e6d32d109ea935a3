"""The whole system with a Raspberry Pi's half on arm64: the gateway and Mosquitto (arm64
Debian packages and wheels, under QEMU) serve simulated devices (the real firmware on the
MicroPython unix port) over MQTT and over a serial pty, to analysts and a bank on the host.

The Pi's half is set up as docs/GATEWAY.md tells a user to: `ecoin-gateway broker-config`
writes the broker's configuration (and the gateway's own broker password), Mosquitto runs
it unchanged as `mosquitto -c` with the broker key and passwords readable by its group, and
`ecoin-gateway serve --config` routes.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from ecoin.sim.demo import ANALYSTS, GATEWAY, Demo, Device
from ecoin.sim.device import SimDevice
from ecoin.testing.arm64 import Arm64Root, is_emulated, wait_serving
from ecoin.testing.bank import BankProcess
from ecoin.testing.broker import seed_passwords
from ecoin.testing.ptyuart import PtyUart
from ecoin.testing.servers import free_port, wait_for_port
from ecoin.tools.provisioning.bundle import Broker, provision_device
from ecoin.tools.provisioning.install import install_bundle
from ecoin.tools.provisioning.targets import SimTarget

pytestmark = pytest.mark.timeout(3600)  # the first run builds the arm64 root

SERIAL_DEVICE = "ser-01"
SERIAL_LINK = "serial/by-id/usb-ecoin_sim_uart_ser-01-if00"  # under the work directory


def gateway_table(pi: Arm64Root, work: Path, ports: dict[str, int], bank_url: str) -> dict[str, Any]:
    """gateway.toml as a Pi's /etc/ecoin/gateway.toml would be, paths as the gateway sees them."""
    pki, tls = work / "pki", work / "broker-tls"
    side = {
        "host": "127.0.0.1",
        "port": ports["service"],
        "tls": True,
        "ca": pi.inside(pki / "ca.crt"),
        "cert": pi.inside(pki / "gateway" / f"{GATEWAY}.crt"),
        "key": pi.inside(pki / "gateway" / f"{GATEWAY}.key"),
        # written by broker-config on the Pi (docs/GATEWAY.md): the Pi's own broker password
        "password_file": pi.inside(work / "broker" / "secrets" / f"{GATEWAY}.password"),
    }
    return {
        "gateway_id": GATEWAY,
        "op_timeout_s": 30.0,
        "edge": side,
        "upstream": side,
        "bank": {
            "url": bank_url,
            "ca": side["ca"],
            "cert": side["cert"],
            "key": side["key"],
            "timeout_s": 30.0,
        },
        "queue": {"path": pi.inside(work / "gateway" / "queue.sqlite")},
        "limits": {"rate_per_s": 100.0, "burst": 100},
        "health": {"port": ports["health"]},
        "serial": [{"device_id": SERIAL_DEVICE, "path": pi.inside(work / SERIAL_LINK)}],
        "broker": {
            "out_dir": pi.inside(work / "broker"),
            "ca": pi.inside(tls / "ca.crt"),
            "cert": pi.inside(tls / "broker.crt"),
            "key": pi.inside(tls / "broker.key"),
            "bind": "127.0.0.1",
            "device_port": ports["device"],
            "service_port": ports["service"],
            "device_tls": False,  # the MicroPython unix port has no ssl module
            "devices": [Demo.device_name(i) for i in range(ports["mqtt_devices"])],
            "gateways": [GATEWAY],
            "analysts": ANALYSTS,
        },
    }


class PiDemo(Demo):
    """`make demo` with the broker and the gateway on arm64, and one more device on a wire."""

    def __init__(self, pi: Arm64Root, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pi = pi
        self.ports = {"device": free_port(), "service": free_port(), "health": free_port()}
        self.ports["mqtt_devices"] = self.devices
        self.gateway: subprocess.Popen[bytes] | None = None
        self.uart: PtyUart | None = None
        self.final_metrics = ""

    def write_config(self, bank_url: str) -> str:
        path = self.workdir / "gateway" / "gateway.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            tomli_w.dumps({"gateway": gateway_table(self.pi, self.workdir, self.ports, bank_url)})
        )
        return self.pi.inside(path)

    def start_broker(self, pki_dir: Path) -> dict[str, Any]:
        pki, tls, out = (self.pi.inside(self.workdir / d) for d in ("pki", "broker-tls", "broker"))
        # The analysts on the host already hold their broker passwords (as an operator would
        # have copied them from an earlier broker-config): this run keeps them.
        seed_passwords(self.workdir / "broker", pki_dir, list(ANALYSTS))
        # docs/GATEWAY.md's steps: the broker's TLS files and passwords readable by its group.
        steps = (
            f"install -d -m 0750 -g mosquitto {tls} && install -m 0640 -g mosquitto {pki}/ca.crt "
            f"{pki}/broker/broker.crt {pki}/broker/broker.key {tls}/ && "
            f"ecoin-gateway broker-config --config {self.write_config('')} && "
            f"chgrp mosquitto {out}/passwords {out}/passwords-services"
        )
        done = self.pi.run(["sh", "-c", steps])
        assert done.returncode == 0, done.stdout + done.stderr
        log = self.workdir / "broker-mosquitto.log"
        broker = self.pi.popen(["mosquitto", "-c", f"{out}/mosquitto.conf"], log)
        self.stack.callback(Arm64Root.stop, broker)
        wait_for_port(self.ports["service"], timeout=60)
        wait_for_port(self.ports["device"], timeout=60)
        assert is_emulated(broker.pid), "Mosquitto is not the arm64 one"
        self.say(f"arm64 Mosquitto: devices on {self.ports['device']}, services on {self.ports['service']}")
        credentials = self.workdir / "broker" / "credentials.toml"
        return {
            "device_port": self.ports["device"],
            "service_port": self.ports["service"],
            "credentials": credentials,
        }

    def start_gateway(self, pki_dir: Path, port: int, bank_url: str) -> None:
        self.uart = PtyUart(free_port(), self.workdir / SERIAL_LINK).start()
        self.stack.callback(self.uart.stop)
        config = self.write_config(bank_url)
        log = self.workdir / "gateway" / "gateway.log"
        self.gateway = self.pi.popen(["ecoin-gateway", "serve", "--config", config], log)
        self.stack.callback(Arm64Root.stop, self.gateway)
        wait_serving(self.ports["health"], self.gateway, {"average", "stats"}, log)
        assert is_emulated(self.gateway.pid), "the gateway is not the arm64 one"
        self.say("arm64 gateway routing")

    def provision(self, pki_dir: Path, bank: BankProcess, broker: dict[str, Any]) -> None:
        super().provision(pki_dir, bank, broker)
        assert self.uart is not None
        # A device on a wire, with few coins: it also tops up, through the arm64 gateway.
        with bank.client("owner", "olive") as owner:
            bundle = provision_device(
                owner,
                SERIAL_DEVICE,
                "average",
                coins=12,
                out_dir=self.workdir / "devices",
                broker=Broker(password="unused-over-serial"),
                config={
                    "transport": "serial",
                    "serial_port": f"tcp:{self.uart.tcp_port}",
                    "sample_interval": self.batch_seconds / 10,
                    "batch_seconds": self.batch_seconds,
                    "max_ops": self.ops,
                    "op_timeout": 30.0,
                    "low_coins": 8,
                    "topup_count": 10,
                },
            )
        flash = self.workdir / "flash" / SERIAL_DEVICE
        install_bundle(bundle, SimTarget(flash, create=True))
        sim = SimDevice(flash, heap=self.heap, runtime=self.runtime)
        self.fleet.append(Device(SERIAL_DEVICE, "average", sim, left=12))
        self.stack.callback(sim.stop)
        sim.start()

    def watch(self, bank: BankProcess, timeout: float = 900.0) -> None:
        super().watch(bank, timeout)
        self.final_metrics = self.metrics()  # before the exit stack stops the gateway

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health']}/metrics", timeout=10) as r:
            return str(r.read().decode())


def test_devices_over_mqtt_and_serial_through_the_arm64_gateway(pi: Arm64Root) -> None:
    demo = PiDemo(
        pi, workdir=pi.workdir / "e2e", devices=2, ops=10, heap="72K", runtime="micropython", quiet=True
    )
    result = demo.run()
    metrics = demo.final_metrics
    consoles = {d.name: d.sim.output() for d in demo.fleet}
    assert result["devices"] == 3 and result["ops_failed"] == 0, consoles
    assert result["ops_ok"] == 30 and result["analyst_credits"] == 30, consoles
    assert result["audit_ok"]
    serial = consoles[SERIAL_DEVICE]
    assert "via serial" in serial and "topup: 10 coins added" in serial, serial[-3000:]
    assert demo.uart is not None and demo.uart.bytes_up > 0 and demo.uart.bytes_down > 0
    # Every operation of both transports, and the serial device's top-ups, passed the gateway.
    ops_in = re.search(r'ecoin_gateway_ops_in_total\{kind="operation"\} (\S+)', metrics)
    assert ops_in and float(ops_in.group(1)) == 30, metrics
    assert re.search(r'ecoin_gateway_ops_in_total\{kind="topup"\} [1-9]', metrics), metrics

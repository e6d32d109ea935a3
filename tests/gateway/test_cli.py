"""``ecoin-gateway`` as a process: --help, broker-config, serve with /healthz and /metrics,
the retained status topic with its last will, structured logs without payloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ecoin.gateway import config as gwconfig
from ecoin.testing.gateway import Device, EchoAnalyst, operation, wait_until
from ecoin.testing.servers import Mosquitto, free_port, stop_paho

CLI = [sys.executable, "-m", "ecoin.gateway.cli"]


@pytest.mark.slow
def test_help_and_bad_config(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    assert "serve" in out and "broker-config" in out and "ECOIN_GATEWAY_CONFIG" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\ngateway_id = 'gw1'\nsurprise = 1\n")
    run = subprocess.run([*CLI, "-c", str(bad), "serve"], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown key(s) surprise" in run.stderr and "Traceback" not in run.stderr
    flat = tmp_path / "flat.toml"  # the old layout, without the [gateway] table
    flat.write_text("gateway_id = 'gw1'\n")
    run = subprocess.run([*CLI, "serve", "--config", str(flat)], capture_output=True, text=True)
    assert run.returncode == 2 and "no [gateway] table (found gateway_id outside it)" in run.stderr
    run = subprocess.run([*CLI, "serve", "--no-such-option"], capture_output=True, text=True)
    assert run.returncode == 2 and "usage" in run.stderr
    missing = tmp_path / "tls.toml"  # relative paths are taken from the file's directory
    missing.write_text(
        "[gateway.upstream]\ntls = true\nca = 'no-ca.crt'\n[gateway.queue]\npath = 'q.sqlite'\n"
    )
    env = {**os.environ, "ECOIN_GATEWAY_CONFIG": str(missing)}
    run = subprocess.run([*CLI, "serve"], capture_output=True, text=True, timeout=30, env=env, cwd="/")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "TLS files" in run.stderr
    loaded = gwconfig.load(missing)
    assert (loaded.upstream.ca, loaded.queue.path) == (
        str(tmp_path / "no-ca.crt"),
        str(tmp_path / "q.sqlite"),
    )


def test_broker_config_command(tmp_path: Path) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text(
        """[gateway.broker]
out_dir = "out"
ca = "/etc/ecoin/pki/ca.crt"
cert = "/etc/ecoin/pki/broker/broker.crt"
key = "/etc/ecoin/pki/broker/broker.key"
devices = ["dev-a", "dev-b"]
gateways = ["gw1"]
[gateway.broker.analysts]
alice = ["avg", "stats"]
"""
    )
    subprocess.run([*CLI, "broker-config", "--config", str(conf)], check=True, capture_output=True)
    text = (tmp_path / "out" / "mosquitto.conf").read_text()
    assert "per_listener_settings true" in text and "require_certificate true" in text
    acl = (tmp_path / "out" / "acl-services").read_text()
    assert "topic write ecoin/svc/stats/analyst/alice" in acl and "topic readwrite ecoin/gw/gw1/#" in acl
    assert (tmp_path / "out" / "acl-devices").read_text().count("%u") == 2
    assert len((tmp_path / "out" / "passwords").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ("", "lists no devices, gateways or analysts"),  # no [gateway.broker] table at all
        ('[gateway.broker]\ndevices = ["d1"]\nca = "ca.crt"\n', "give cert, key (the broker's TLS files)"),
    ],
)
def test_broker_config_refuses_a_table_it_cannot_make_a_broker_of(
    tmp_path: Path, table: str, error: str
) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text(f"[gateway]\n{table}")
    run = subprocess.run(
        [*CLI, "broker-config", "--config", str(conf), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and error in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


class StatusWatcher:
    def __init__(self, port: int) -> None:
        self.states: list[str] = []
        self.changed = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("ecoin/gw/gw1/status", 1)
        self.client.loop_start()

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.states.append(json.loads(msg.payload)["state"] if msg.payload else "")
            self.changed.notify_all()

    def wait_for(self, state: str) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.states and self.states[-1] == state, 15), self.states

    def stop(self) -> None:
        stop_paho(self.client)


def _serve(tmp_path: Path, port: int, health: int) -> subprocess.Popen[bytes]:
    conf = tmp_path / "gateway.toml"
    conf.write_text(
        f"""[gateway]
gateway_id = "gw1"
[gateway.edge]
port = {port}
[gateway.upstream]
port = {port}
[gateway.queue]
path = "queue.sqlite"
[gateway.health]
port = {health}
"""
    )
    return subprocess.Popen([*CLI, "serve", "--config", str(conf)], stderr=subprocess.PIPE)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:  # not listening yet
        return 0, b""


def test_serve_health_metrics_status_and_will(
    tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    health = free_port()
    watcher = StatusWatcher(mosquitto.port)
    proc = _serve(tmp_path, mosquitto.port, health)
    dev = Device(mosquitto.port, "cli-dev").start()
    try:
        watcher.wait_for("online")

        def healthy() -> bool:
            code, body = _get(f"http://127.0.0.1:{health}/healthz")
            state = json.loads(body) if code == 200 else {}
            return bool(state.get("edge") and state.get("upstream") and state.get("services") == ["echo"])

        wait_until(healthy, what="healthz with the echo service")
        op = operation()
        dev.ask(op)
        status, metrics = _get(f"http://127.0.0.1:{health}/metrics")
        text = metrics.decode()
        assert status == 200
        assert 'ecoin_gateway_ops_in_total{kind="operation"} 1.0' in text
        assert 'ecoin_gateway_ops_out_total{kind="result"} 1.0' in text
        assert "ecoin_gateway_latency_seconds_bucket" in text and "ecoin_gateway_queue_bytes" in text
        assert _get(f"http://127.0.0.1:{health}/nope")[0] == 404
        proc.send_signal(signal.SIGTERM)  # a clean stop says offline itself
        assert proc.wait(20) == 0
        watcher.wait_for("offline")
        logs = proc.stderr.read().decode() if proc.stderr else ""
        events = [json.loads(line)["event"] for line in logs.splitlines()]
        assert "gateway_started" in events and "gateway_stopped" in events
        assert op.hex() not in logs and op[2:18].hex() not in logs  # no payloads, not even op ids
        # A crash (no goodbye): the broker publishes the last will.
        proc = _serve(tmp_path, mosquitto.port, health)
        watcher.wait_for("online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        watcher.wait_for("offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        dev.stop()
        watcher.stop()

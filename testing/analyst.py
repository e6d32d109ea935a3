"""Real analysts for tests, benchmarks and the demo, and the pieces around them.

    broker = tls_broker(tmp / "mq", pki, {"alice": ["average"]}).start()   # Mosquitto + ACLs
    coins = withdraw(bank, 100, analysts={"alice": ["average"]})           # from a real bank
    ops = seal(coins, "average", READINGS)                                  # OPERATION frames
    with AnalystProcess(tmp / "a1", pki, broker.port, bank.url, ["average"]) as a1:
        gw = Requester(broker.port, pki)         # plays the gateway: requests and replies
        gw.send_all("average", ops); gw.wait(len(ops))

``AnalystProcess`` runs ``python -m ecoin.analyst.cli serve`` in its own process, with its
own ``analyst.toml``, and waits until it is subscribed (``/healthz``). Only processes it
started are ever stopped or killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ecoin.common import crypto, sockets, tls, topics
from ecoin.common.bank_client import BankError, Withdrawal
from ecoin.protocol import session
from ecoin.testing import metrics
from ecoin.testing.broker import generated_broker, password, password_file
from ecoin.testing.servers import Mosquitto, free_port, stop, stop_paho

READINGS = json.dumps(
    {"sensor": "temp0", "unit": "C", "start": 1795000000, "interval": 1.0, "values": [21.5, 21.6, 21.4, 22.0]}
).encode()


def tls_broker(
    workdir: Path,
    pki: Path,
    analysts: dict[str, list[str]],
    gateways: tuple[str, ...] = ("gw1",),
    instances: dict[str, list[str]] | None = None,
) -> Mosquitto:
    """A Mosquitto configured by the gateway's generator (TLS, client certificates and
    passwords, ACLs); not started. Its ``port`` is the service listener (analysts and
    gateways); ``instances``: analyst -> its processes' instance ids (default ["1"])."""
    return generated_broker(workdir, pki, analysts=analysts, gateways=gateways, instances=instances).mosquitto


# Coins and operations.


def _ignore_exists(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except BankError as exc:
        if exc.code != "exists":
            raise


def withdraw(
    bank: Any,
    count: int,
    analysts: dict[str, list[str]],
    owner: str = "olive",
    device: str = "dev-a",
) -> Withdrawal:
    """``count`` coins for ``device`` of ``owner`` from a running ``BankProcess``; creates
    the accounts (analysts with their services) and the device on first use."""
    admin = bank.admin
    _ignore_exists(admin.create_account, owner, "owner")
    for name, services in analysts.items():
        _ignore_exists(admin.create_account, name, "analyst", services)
    admin.fund(owner, count)
    with bank.client("owner", owner) as o:
        _ignore_exists(o.register_device, device, os.urandom(32))
        return o.withdraw(device, count)


@dataclass(frozen=True)
class Sealed:
    op_id: bytes
    k_enc: bytes
    k_mac: bytes
    frame: bytes

    def open(self, frame: bytes) -> Any:
        """The result JSON of a RESULT frame for this operation (raises InvalidTag)."""
        return json.loads(session.open_result(crypto, frame, self.op_id, self.k_enc, self.k_mac))


def seal(coins: Withdrawal, service: str, readings: bytes = READINGS) -> list[Sealed]:
    out = []
    for coin in coins.coins:
        op_id, k_enc, k_mac, frame = session.seal_operation(
            crypto, coins.public_key, coins.kid, coin, service, readings
        )
        out.append(Sealed(bytes(op_id), k_enc, k_mac, bytes(frame)))
    return out


# The gateway's side of the broker, reduced to what a test needs.


class Requester:
    """Publishes OPERATION frames as the gateway does (QoS 1, response topic, correlation
    data) and collects the replies by correlation data."""

    def __init__(self, port: int, pki: Path | None, gateway_id: str = "gw1", host: str = "127.0.0.1") -> None:
        self.reply_topic = f"ecoin/gw/{gateway_id}/reply"
        self.replies: dict[bytes, list[bytes]] = {}
        self.arrivals: list[float] = []
        self._cond = threading.Condition()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"req-{gateway_id}-{os.getpid()}",
            protocol=mqtt.MQTTv5,
        )
        if pki is not None:  # the gateway's upstream login on the generated broker
            role = pki / "gateway" / gateway_id
            c.tls_set_context(tls.client_context(f"{role}.crt", f"{role}.key", pki / "ca.crt"))
            c.username_pw_set(topics.gateway_client(gateway_id, "up"), password(pki, gateway_id))
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_socket_open = sockets.nodelay
        c.on_message = self._on_message
        subscribed = threading.Event()
        c.on_subscribe = lambda *_: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = 1000
        c.connect(host, port, properties=props)
        sock = c.socket()
        if isinstance(sock, socket.socket):  # as the gateway does: no Nagle delay on small frames
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.subscribe(self.reply_topic, qos=1)
        c.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("the requester could not subscribe to its reply topic")
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        corr = bytes(getattr(msg.properties, "CorrelationData", b"") or b"")
        with self._cond:
            self.replies.setdefault(corr, []).append(bytes(msg.payload))
            self.arrivals.append(time.monotonic())
            self._cond.notify_all()

    def send(
        self,
        service: str,
        frame: bytes,
        correlation: bytes,
        reply_topic: str | None = "",
        expiry_s: int | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Publishes as the gateway does; ``expiry_s`` is the MQTT 5 message expiry the
        gateway sets to the device's remaining patience."""
        props = Properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            props.MessageExpiryInterval = expiry_s
        if reply_topic is not None:
            props.ResponseTopic = reply_topic or self.reply_topic
        props.CorrelationData = correlation
        return self.client.publish(f"ecoin/svc/{service}/op", frame, qos=1, properties=props)

    def send_all(self, service: str, ops: list[Sealed], start: int = 0) -> None:
        for i, op in enumerate(ops):
            self.send(service, op.frame, b"%d" % (start + i))

    def wait(self, count: int, timeout: float = 60.0) -> bool:
        """True once ``count`` distinct correlations have at least one reply."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.replies) >= count, timeout)

    def wait_arrivals(self, count: int, timeout: float = 60.0) -> bool:
        """True once ``count`` replies arrived, each counted (a copy, or one without
        correlation data from an MQTT 3.1.1 client, too)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.arrivals) >= count, timeout)

    def reply(self, correlation: bytes) -> bytes | None:
        with self._cond:
            got = self.replies.get(correlation)
            return got[0] if got else None

    def close(self) -> None:
        stop_paho(self.client)


# The analyst itself, as a real process.


class AnalystProcess:
    def __init__(
        self,
        workdir: Path,
        pki: Path,
        broker_port: int,
        bank_url: str,
        services: list[str],
        analyst: str = "alice",
        instance: str = "1",
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        table: dict[str, Any] = {
            "id": analyst,
            "instance": instance,
            "services": services,
            "pki": str(pki),
            "metrics_port": self.metrics_port,
            "announce_every_s": 1.0,
            "broker": {"host": "127.0.0.1", "port": broker_port, "tls": True},
            "bank": {"url": bank_url},
            "limits": {"workers": 1, "drain_s": 5.0},
        }
        for key, value in overrides.items():  # one level of nested tables is merged
            if isinstance(value, dict) and isinstance(table.get(key), dict):
                table[key] = {**table[key], **value}
            else:
                table[key] = value
        if table["broker"].get("tls", True):  # the generated broker: certificate and password
            table["broker"].setdefault("password_file", str(password_file(pki, analyst)))
        self.config = self.workdir / "analyst.toml"
        self.config.write_text(tomli_w.dumps({"analyst": table}))
        self.log = self.workdir / "analyst.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, wait: bool = True) -> AnalystProcess:
        """Starts the process and, with ``wait``, waits until /healthz says it serves."""
        if self.proc and self.proc.poll() is None:
            # A second process would leak the first (``with AnalystProcess(...).start():``).
            raise RuntimeError("the analyst is already running; stop() it first")
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        cmd = [sys.executable, "-m", "ecoin.analyst.cli", "serve", "--config", str(self.config)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while wait and not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the analyst exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the analyst was not ready in {timeout}s: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed ``name{label="value",...}`` (labels sorted)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return metrics.parse(r.read().decode())

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (its analyser workers go with their pipes)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc:
            stop(self.proc, timeout=20)
            return self.proc.returncode
        return None

    def __enter__(self) -> AnalystProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

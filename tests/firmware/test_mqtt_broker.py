"""The firmware's MQTT client against a real Mosquitto: QoS 1 both ways, keepalive, a broker
restarted in the middle of an operation, and a broker that is not there."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto, eventually, free_port, wait_for_port, wait_until
from ecoin.tools import pki as pki_tool
from ecoin.tools.provisioning.deploy import install_firmware

from .conftest import MakeDevice, micropython, nodelay_broker

HERE = Path(__file__).resolve().parent


def test_qos1_round_trip_and_keepalive_under_micropython(broker: Mosquitto, tmp_path: Path):
    fw = tmp_path / "fw"
    install_firmware(fw, "sim", mpy=True, keep=[(HERE / "mp_mqtt.py").read_text()])
    proc = subprocess.Popen(
        [micropython(), "-X", "heapsize=64K", str(HERE / "mp_mqtt.py"), str(broker.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"MICROPYPATH": str(fw)},
    )
    assert proc.stdout
    lines = []
    for line in proc.stdout:
        if not line.startswith("mqtt: connected"):
            lines.append(line.strip())
        if line.strip() == "ready":
            cp = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
            cp.connect("127.0.0.1", broker.port)
            cp.loop_start()
            cp.publish("t/from-cpython", b"hello device", qos=1).wait_for_publish(5)
            cp.loop_stop()
            cp.disconnect()
    assert proc.wait(30) == 0, lines
    assert lines == [
        "connected True",
        "published True True",
        "echo True",
        "ready",
        "from cpython True",
        "alive after pings True",
        "done",
    ], lines


def test_broker_restarted_mid_operation_then_the_device_finishes_it(
    tmp_path: Path, responder: Responder, broker: Mosquitto, make_device: MakeDevice
):
    responder.mode = "hold"  # the result waits until the broker has come back
    dev = make_device(broker.port, max_ops=1, op_timeout=30.0, io_timeout=1.0)
    dev.start()
    assert eventually(lambda: responder.ops, timeout=20), dev.output()
    broker.stop()  # mid-operation: the coin is out, the answer is not back
    assert dev.wait_for("mqtt: connection lost", timeout=10), dev.output()
    time.sleep(0.5)
    broker.start()
    assert dev.wait_for("mqtt: connected", count=2, timeout=20), dev.output()
    wait_until(lambda: responder.subscriptions >= 2, timeout=20, what="the responder subscribed again")
    responder.flush_held()
    assert dev.wait(30) == 0
    out = dev.output()
    assert "ops=1 results=1 doubts=0" in out, out
    assert dev.in_doubt() == [] and dev.state().next == 1
    assert responder.coins_sent_twice() == {}


def _delays(out: str) -> list[int]:
    return [int(d) for d in re.findall(r"unreachable \(.*\); attempt \d+, next in (\d+) ms", out)]


def test_broker_unreachable_bounded_waits_and_clear_messages(
    tmp_path: Path, coin_key, make_device: MakeDevice
):
    port = free_port()  # nothing listens here yet
    dev = make_device(port, batch_seconds=0.2, io_timeout=1.0).start()
    assert dev.wait_for("ms\n", count=4, timeout=20), dev.output()  # four attempts: "next in N ms"
    assert dev.wait_for("broker unreachable; ", timeout=10)  # the loop goes on: nothing blocks
    out = dev.output()
    # Through the device's radio (a relay that accepts, then finds no broker) a refused
    # connection shows as a reset.
    seen = dev.radio.port  # type: ignore[attr-defined]
    assert f"mqtt: broker 127.0.0.1:{seen} unreachable ([Errno 104] ECONNRESET)" in out, out
    delays = _delays(out)
    assert all(125 <= d <= 30000 for d in delays) and delays[3] > delays[0], delays
    assert dev.running and dev.state().next == 0 and dev.in_doubt() == []  # no coin spent

    with nodelay_broker(tmp_path / "late", port) as late:
        r = Responder(late.port, coin_key[0]).start()
        try:
            assert dev.wait_for("result {", timeout=30), dev.output()
        finally:
            r.stop()
        dev.stop()
    assert dev.state().next >= 1


def test_silent_broker_is_bounded_by_io_timeout(tmp_path: Path, make_device: MakeDevice):
    """A broker that accepts the connection and then says nothing (a bad link): each attempt
    gives up after io_timeout and says so."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        dev = make_device(srv.getsockname()[1], io_timeout=0.5).start()
        assert dev.wait_for("unreachable (no CONNACK)", count=2, timeout=20), dev.output()
        assert dev.running
        dev.stop()
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_tls_to_the_broker_verified_against_the_project_ca(tmp_path: Path, pki: Path, coin_key, make_device):
    """TLS with the broker's certificate from the project PKI. mbedTLS's buffers are on the C
    heap; the SSL context and socket objects and the faithful board's model are not, hence
    128K here (the bench measures the kind board's need: docs/FIRMWARE.md, Memory)."""
    plain, tls = free_port(), free_port()
    conf = (
        f"listener {plain} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"listener {tls} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/broker/broker.crt\n"
        f"keyfile {pki}/broker/broker.key\nallow_anonymous true\n"
    )
    other_ca = tmp_path / "other-pki"
    pki_tool.init(other_ca, coin_key_bits=2048)
    with Mosquitto(tmp_path / "mq", conf, plain) as broker:
        wait_for_port(tls)
        r = Responder(broker.port, coin_key[0]).start()
        try:
            good = make_device(tls, name="good", heap="128K", broker_host="localhost", tls=True, max_ops=2)
            shutil.copyfile(pki / "ca.crt", good.flash_dir / "ca.crt")
            good.start()
            assert good.wait(30) == 0
            assert "(tls)" in good.output() and "ops=2 results=2" in good.output(), good.output()
            bad = make_device(tls, name="bad", heap="128K", broker_host="localhost", tls=True, io_timeout=1.0)
            shutil.copyfile(other_ca / "ca.crt", bad.flash_dir / "ca.crt")
            bad.start()
            assert bad.wait_for("unreachable", timeout=20), bad.output()
            bad.stop()
            assert bad.state().next == 0  # a broker it cannot verify gets nothing
        finally:
            r.stop()

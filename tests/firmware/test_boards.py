"""The defects of issue 10, each shown on the board-faithful simulated board (real
MicroPython unix port, ecoin.sim.hardware): the clock and TLS, WiFi late at power-on and
lost, a serial-only device, a sensor that times out, a slow link under a short watchdog,
raw random bytes and timestamps without a set clock."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import serial

from ecoin.gateway import framing
from ecoin.sim.ntp import NtpResponder
from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto, eventually, free_port, wait_for_port

from .conftest import MakeDevice, faithful, micropython

ROOT = Path(__file__).resolve().parents[2]


def test_tls_with_the_clock_at_2000_connects_once_ntp_answers(
    tmp_path: Path, pki: Path, coin_key, make_device
):
    """Defect 1: the broker's certificate is not yet valid at 2000-01-01; NTP sets the clock."""
    plain, tls = free_port(), free_port()
    conf = (
        f"listener {plain} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        f"listener {tls} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/broker/broker.crt\n"
        f"keyfile {pki}/broker/broker.key\nallow_anonymous true\n"
    )
    ntp = NtpResponder().start()
    ntp.silent = True
    with Mosquitto(tmp_path / "mq", conf, plain) as broker:
        wait_for_port(tls)
        r = Responder(broker.port, coin_key[0]).start()
        try:
            dev = make_device(
                tls,
                heap="128K",
                broker_host="localhost",
                tls=True,
                max_ops=2,
                ntp_port=ntp.port,
                ntp_timeout=0.3,
                ntp_retry=1.0,
                clock_floor=0,
            )
            shutil.copyfile(pki / "ca.crt", dev.flash_dir / "ca.crt")
            dev.start()
            assert dev.wait_for("certificate not valid at the board's time", timeout=30), dev.output()
            assert r.ops == [] and dev.state().next == 0
            ntp.silent = False
            assert dev.wait(60) == 0, dev.output()
            out = dev.output()
            assert "clock: set from 127.0.0.1" in out and "ops=2 results=2 doubts=0" in out, out
        finally:
            r.stop()
            ntp.stop()


def test_wifi_late_at_power_on_the_device_runs_without_a_human(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """Defect 2: the access point answers 60 s after power-on (a router after a power cut)."""
    dev = make_device(broker.port, max_ops=2, hardware=faithful(wifi_delay=60.0))
    began = time.monotonic()
    dev.start()
    assert dev.wait(150) == 0, dev.output()
    out = dev.output()
    assert time.monotonic() - began >= 60
    assert "network: waiting for ecoin-test" in out and "ops=2 results=2 doubts=0" in out, out
    assert "Wifi Internal Error" not in out and dev.watchdog_resets == 0 and dev.resets == 0


def test_pico_w_rejoins_after_an_access_point_outage(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice, ap
):
    """Defect 4: cyw43 does not rejoin by itself; the firmware does, and operates again."""
    dev = make_device(broker.port, hardware=faithful(board="pico_w"), batch_seconds=0.3).start()
    assert dev.wait_for("result {", timeout=30), dev.output()
    ap.down()
    assert dev.wait_for("connection lost", timeout=20), dev.output()
    time.sleep(1.0)  # an outage of a while; the device keeps sampling
    ap.up()
    seen = dev.output().count("result {")
    assert eventually(lambda: dev.output().count("result {") > seen + 1, 60), dev.output()
    dev.stop()
    assert dev.watchdog_resets == 0


def test_serial_only_device_boots_and_operates_through_the_serial_framing(make_device: MakeDevice, coin_key):
    """Defect 3: no WiFi settings, a UART id with its pins (the sim wires UART 1 to a port)."""
    port = free_port()
    hw = faithful(uart_tcp={"1": port})
    dev = make_device(
        0,
        transport="serial",
        wifi_ssid=None,
        serial_port=1,
        serial_tx=17,
        serial_rx=16,
        max_ops=3,
        query_timeout=1.0,
        hardware=hw,
    )
    dev.start()
    assert dev.wait_for("via serial 1", timeout=20), dev.output()
    answerer = Responder(0, coin_key[0])
    line = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.1)
    decoder = framing.Decoder()
    deadline = time.monotonic() + 60
    try:
        while dev.running and time.monotonic() < deadline:
            try:
                data = line.read(4096)
            except serial.SerialException:
                break
            for frame in decoder.feed(data):
                answer = answerer.answer("dev1", frame)
                if answer:
                    line.write(framing.encode(answer))
    finally:
        line.close()
    assert dev.wait(10) == 0
    assert "ops=3 results=3 doubts=0" in dev.output(), dev.output()


def test_a_uart_without_pins_is_a_configuration_error_that_waits(make_device: MakeDevice):
    dev = make_device(
        0,
        name="nopins",
        transport="serial",
        wifi_ssid=None,
        serial_port=1,
        hardware=faithful(uart_tcp={"1": free_port()}),
    )
    dev.start()
    assert dev.wait_for("waiting for maintenance", timeout=20), dev.output()
    assert "serial_tx" in dev.output() and dev.running and dev.resets == 0
    dev.kill()


def test_a_sensor_that_times_out_during_a_result_wait_costs_no_coin(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """Defect 5: every third reading raises OSError, also while a RESULT is awaited."""
    responder.delay = 0.2
    dev = make_device(broker.port, max_ops=5, hardware=faithful(sensor_fail_every=3))
    dev.start()
    assert dev.wait(60) == 0
    out = dev.output()
    assert "ops=5 results=5 doubts=0" in out, out
    assert "connection lost" not in out and out.count("mqtt: connected") == 1


def test_a_connect_over_a_slow_link_feeds_the_pico_w_watchdog(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """Defect 7: 2.5 s each way; CONNACK and SUBACK take 10 s, longer than 8.4 s."""
    dev = make_device(
        broker.port,
        max_ops=1,
        hardware=faithful(board="pico_w"),
        latency=2.5,
        io_timeout=8.0,
        query_timeout=20.0,
        op_timeout=20.0,
        keepalive=60,
    )
    dev.start()
    assert dev.wait(120) == 0, dev.output()
    assert "ops=1 results=1 doubts=0" in dev.output(), dev.output()
    assert dev.watchdog_resets == 0


def test_pico_w_random_bytes_are_conditioned(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    """Defect 10: the raw source repeats after every reset; op_ids must not."""
    dev = make_device(broker.port, max_ops=2, hardware=faithful(board="pico_w"))
    for _ in range(3):
        dev.start()
        assert dev.wait(30) == 0, dev.output()  # the same flash, a fresh boot each time
    ids = [s.op_id for s in responder.ops]
    assert len(ids) == 6 and len(set(ids)) == 6, "op_ids repeat across resets"


def test_a_board_without_a_set_clock_sends_no_timestamps(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice, ntp: NtpResponder
):
    """Defect 11: a Pico W's RTC starts at 2021 and looks set; only NTP counts."""
    silent = NtpResponder().start()
    silent.silent = True
    try:
        dev = make_device(
            broker.port, max_ops=2, hardware=faithful(board="pico_w"), ntp_port=silent.port, ntp_timeout=0.3
        )
        dev.start()
        assert dev.wait(30) == 0, dev.output()
    finally:
        silent.stop()
    assert [s.start for s in responder.ops] == [0, 0]
    synced = make_device(broker.port, name="synced", max_ops=1, hardware=faithful(board="pico_w"))
    synced.start()
    assert synced.wait(30) == 0
    assert abs(responder.ops[-1].start - time.time()) < 60


def test_the_original_esp32_refuses_its_uncalibrated_sensor(tmp_path: Path):
    """Defect 9: without a DHT22 (sensor_pin) the original ESP32 has no meaningful sensor."""
    for name in ("boards/esp32/board.py", "firmware/boardkit.py", "firmware/wifi.py"):
        shutil.copy(ROOT / name, tmp_path)
    (tmp_path / "esp32.py").write_text("def raw_temperature():\n    return 128\n")
    code = (
        "import board\n"
        "try:\n    board.setup({'sensor_pin': None})\n    print('accepted')\n"
        "except ValueError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run(
        [micropython(), "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"MICROPYPATH": f"{tmp_path}:.frozen"},
    )
    assert "refused: sensor_pin" in out.stdout, out.stdout + out.stderr

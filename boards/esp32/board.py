# ESP32 board: WiFi station, a DHT22 (or the chip's calibrated sensor on S2/S3/C3), the
# hardware watchdog, an LED, UART with explicit pins. Hardware objects are created on first
# use, never at import. Shared parts: firmware/boardkit.py.
import os
import time

from boardkit import clock, connect_network, maintenance, now, reset, running, set_time, wifi_board, watchdog  # noqa: F401

_cfg = {}
_hw = {}
_dht = [0, 0]  # last DHT22 reading (hundredths) and when it was taken: it wants 2 s between reads
NODELAY = (6, 1)  # IPPROTO_TCP, TCP_NODELAY (ESP-IDF lwIP)
random = os.urandom  # esp_random(): true random while the radio is on; conditioned anyway


def setup(cfg):
    """Checks what only this board needs; ValueError names the setting to fix."""
    for key in ("sensor_pin", "led_pin"):
        _cfg[key] = cfg.get(key)
    if cfg.get("sensor_pin") is None:
        import esp32

        if not hasattr(esp32, "mcu_temperature"):
            raise ValueError("sensor_pin: the original ESP32's raw_temperature() is uncalibrated and often "
                             "stuck; wire a DHT22 and give its GPIO")
    if cfg.get("transport") == "serial" and (cfg.get("serial_tx") is None or cfg.get("serial_rx") is None):
        raise ValueError("serial_tx and serial_rx: UART1's default pins are the WROOM-32's flash pins")


def read_sensor():
    """A temperature in hundredths of a degree Celsius; OSError if the sensor did not answer
    (the collector skips the reading)."""
    pin = _cfg.get("sensor_pin")
    if pin is None:
        import esp32

        return int(esp32.mcu_temperature() * 100)  # ESP32-S2/S3/C3: calibrated, Celsius
    now_ms = time.ticks_ms()
    if _dht[1] and time.ticks_diff(now_ms, _dht[1]) < 2000:
        return _dht[0]
    import dht
    import machine

    s = _hw.get("dht")
    if s is None:
        s = _hw["dht"] = dht.DHT22(machine.Pin(pin))
    s.measure()
    _dht[0], _dht[1] = int(s.temperature() * 100), now_ms
    return _dht[0]


def led(on):
    import machine

    p = _hw.get("led")
    if p is None:
        p = _hw["led"] = machine.Pin(_cfg.get("led_pin") or 2, machine.Pin.OUT)
    p.value(1 if on else 0)


def uart(cfg):
    import machine

    return machine.UART(int(cfg["serial_port"]), baudrate=cfg["serial_baud"], tx=cfg["serial_tx"],
                        rx=cfg["serial_rx"], timeout=0)

# Raspberry Pi Pico W board: WiFi station (rejoined after an access-point outage: cyw43 does
# not), the RP2040's on-chip temperature sensor (ADC 4), the hardware watchdog (8.3 s at
# most), the on-board LED, UART0/1 (default pins GP0/GP1, GP4/GP5, or explicit). Hardware
# objects are created on first use, never at import. Shared parts: firmware/boardkit.py.
import os

import boardkit
from boardkit import clock, maintenance, now, reset, running, set_time, wifi_board  # noqa: F401

_hw = {}
NODELAY = (6, 0x40)  # lwIP's TCP_NODELAY here (1 prints "lwip.setsockopt() not implemented")
random = os.urandom  # ring oscillator through an 8-bit LFSR before 1.28: conditioned (entropy.py)


def setup(cfg):
    pass


def connect_network(cfg, feed=None, wait_ms=15000):
    return boardkit.connect_network(cfg, feed, wait_ms, 0xA11140)  # no power saving: it drops keepalives


def watchdog(timeout_ms):
    return boardkit.watchdog(timeout_ms, 8388)  # the RP2040's longest


def read_sensor():
    """The RP2040's temperature in hundredths of a degree Celsius (datasheet 4.9.5:
    T = 27 - (V - 0.706) / 0.001721)."""
    import machine

    adc = _hw.get("adc")
    if adc is None:
        adc = _hw["adc"] = machine.ADC(4)
    volts = adc.read_u16() * 3.3 / 65535
    return int((27 - (volts - 0.706) / 0.001721) * 100)


def led(on):
    import machine

    p = _hw.get("led")
    if p is None:
        p = _hw["led"] = machine.Pin("LED", machine.Pin.OUT)
    p.value(1 if on else 0)


def uart(cfg):
    import machine

    kw = {"baudrate": cfg["serial_baud"], "timeout": 0}
    if cfg.get("serial_tx") is not None:
        kw["tx"], kw["rx"] = machine.Pin(cfg["serial_tx"]), machine.Pin(cfg["serial_rx"])
    return machine.UART(int(cfg["serial_port"]), **kw)

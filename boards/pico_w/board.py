# Raspberry Pi Pico W board: WiFi station, the RP2040's on-chip temperature sensor (ADC 4),
# the hardware watchdog (8.3 s at most), the on-board LED. Hardware objects are created on
# first use, never at import.
import time

_hw = {}


def setup(cfg):
    pass


def connect_network(cfg, timeout_ms=15000):
    """Joins the configured WiFi network; False after timeout_ms (the caller retries)."""
    import network

    wlan = _hw.get("wlan")
    if wlan is None:
        wlan = _hw["wlan"] = network.WLAN(network.STA_IF)
    if wlan.isconnected():
        return True
    if not cfg.get("wifi_ssid"):
        print("network: no wifi_ssid in config.json")
        return False
    wlan.active(True)
    wlan.config(pm=0xA11140)  # no power saving: it drops MQTT keepalives
    wlan.connect(cfg["wifi_ssid"], cfg.get("wifi_password") or "")
    start = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
        if wlan.isconnected():
            print("network: connected to %s as %s" % (cfg["wifi_ssid"], wlan.ifconfig()[0]))
            return True
        time.sleep_ms(100)
    print("network: could not join %s" % cfg["wifi_ssid"])
    return False


def read_sensor():
    """The RP2040's temperature in hundredths of a degree Celsius (datasheet 4.9.5:
    T = 27 - (V - 0.706) / 0.001721)."""
    import machine

    adc = _hw.get("adc")
    if adc is None:
        adc = _hw["adc"] = machine.ADC(4)
    volts = adc.read_u16() * 3.3 / 65535
    return int((27 - (volts - 0.706) / 0.001721) * 100)


def watchdog(timeout_ms):
    if not timeout_ms:
        return None
    import machine

    return machine.WDT(timeout=min(timeout_ms, 8388))  # the RP2040's longest


def led(on):
    import machine

    p = _hw.get("led")
    if p is None:
        p = _hw["led"] = machine.Pin("LED", machine.Pin.OUT)
    p.value(1 if on else 0)


def uart(cfg):
    import machine

    return machine.UART(int(cfg["serial_port"]), baudrate=cfg["serial_baud"], timeout=0)

# ESP32 board: WiFi station, the chip's own temperature sensor or a DHT22, the hardware
# watchdog, an LED. Hardware objects are created on first use, never at import.
import time

_cfg = {}
_hw = {}
_dht = [0, 0]  # last DHT22 reading (hundredths) and when it was taken: it wants 2 s between reads


def setup(cfg):
    for key in ("sensor_pin", "led_pin"):
        _cfg[key] = cfg.get(key)


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
    """A temperature in hundredths of a degree Celsius."""
    pin = _cfg.get("sensor_pin")
    if pin is not None:
        now = time.ticks_ms()
        if _dht[1] and time.ticks_diff(now, _dht[1]) < 2000:
            return _dht[0]
        import dht
        import machine

        s = _hw.get("dht")
        if s is None:
            s = _hw["dht"] = dht.DHT22(machine.Pin(pin))
        s.measure()  # OSError if the sensor does not answer: reported, sampling goes on
        _dht[0], _dht[1] = int(s.temperature() * 100), now
        return _dht[0]
    import esp32

    if hasattr(esp32, "mcu_temperature"):  # ESP32-S2/S3/C3: degrees Celsius
        return int(esp32.mcu_temperature() * 100)
    return (esp32.raw_temperature() - 32) * 500 // 9  # the original ESP32: Fahrenheit


def watchdog(timeout_ms):
    if not timeout_ms:
        return None
    import machine

    return machine.WDT(timeout=timeout_ms)


def led(on):
    import machine

    p = _hw.get("led")
    if p is None:
        p = _hw["led"] = machine.Pin(_cfg.get("led_pin") or 2, machine.Pin.OUT)
    p.value(1 if on else 0)


def uart(cfg):
    import machine

    return machine.UART(int(cfg["serial_port"]), baudrate=cfg["serial_baud"], timeout=0)

# Simulated board for the MicroPython unix port: a seeded synthetic sensor, no WiFi, no
# watchdog, an LED that is only a variable, and a UART stand-in on a TCP port (simuart.py).
_state = [1, 0]  # LCG state, sample count
led_on = False


def setup(cfg):
    _state[0] = (cfg.get("seed") or 1) & 0xFFFF


def connect_network(cfg=None):
    return True  # the unix port is always on the host's network


def read_sensor():
    """A temperature in hundredths of a degree: a slow triangle wave around 21 C plus
    seeded noise. Small integers only, so a reading allocates nothing."""
    x = (_state[0] * 25173 + 13849) & 0xFFFF
    _state[0] = x
    k = _state[1] % 200
    _state[1] += 1
    return 2000 + (k if k < 100 else 200 - k) * 2 + x % 51 - 25


def watchdog(timeout_ms=0):
    return None


def led(on):
    global led_on
    led_on = bool(on)


def uart(cfg):
    import simuart

    port = str(cfg["serial_port"])
    if not port.startswith("tcp:"):
        raise ValueError("the sim board's serial_port is tcp:<port>")
    return simuart.TcpUart(int(port[4:]))

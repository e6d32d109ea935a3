# Simulated board for the MicroPython unix port. It fails the way the real boards do
# (docs/SIMULATOR_BOARD.md, "Board-faithful hardware"): the hardware is described by the
# JSON file named by $ECOIN_SIM_HW, written by the host (ecoin.sim.hardware), with an ESP32
# or Pico W personality: a clock that starts at the port's epoch default until NTP sets it,
# a WiFi station that joins late and loses the access point, a watchdog that cannot be
# stopped and resets the board, a UART that must be given pins, a sensor that sometimes
# times out, and (Pico W) weak raw random bytes. That model lives in simhw.py, loaded only
# for such a board, which also serves the rest of the board API (module __getattr__).
# Without the file it is the kind board of old (host clock, instant network, no watchdog),
# as small as the firmware's optional hooks allow.
import os
import time

_state = [1, 0]  # LCG state, sample count
led_on = False
NODELAY = (6, 1)  # IPPROTO_TCP, TCP_NODELAY on the unix port
if os.getenv("ECOIN_SIM_HW"):
    import simhw

    _fail = simhw.load(os.getenv("ECOIN_SIM_HW")).get("sensor_fail_every")
else:
    simhw = _fail = None


def __getattr__(name):
    if simhw is None:
        raise AttributeError(name)
    return getattr(simhw, name)


def setup(cfg):
    _state[0] = (cfg.get("seed") or 1) & 0xFFFF
    if simhw:
        simhw.setup(cfg)


def now():
    """Seconds since 1970, or 0 while no time server has set the clock."""
    return simhw.now() if simhw else int(time.time())


def read_sensor():
    """A temperature in hundredths of a degree: a slow triangle wave around 21 C plus
    seeded noise, small integers only. Every sensor_fail_every-th reading times out
    (OSError 110), as a DHT22 routinely does."""
    x = (_state[0] * 25173 + 13849) & 0xFFFF
    _state[0] = x
    k = _state[1] % 200
    _state[1] += 1
    if _fail and _state[1] % _fail == 0:
        raise OSError(110)
    return 2000 + (k if k < 100 else 200 - k) * 2 + x % 51 - 25


def watchdog(timeout_ms=0):
    return simhw.watchdog(timeout_ms) if simhw and timeout_ms else None


def led(on):
    global led_on
    led_on = bool(on)


def uart(cfg):
    """The UART stand-in: TCP on 127.0.0.1 (simuart.py). serial_port is tcp:<port>, or a
    UART id that the hardware file wires to a port."""
    import simuart

    port = str(cfg["serial_port"])
    if not port.startswith("tcp:"):
        wired = simhw.hw().get("uart_tcp", {}).get(port) if simhw else None
        if wired is None:
            raise ValueError("the sim board's UART %s is not wired (serial_port tcp:<port>)" % port)
        port = "tcp:%d" % wired
    return simuart.TcpUart(int(port[4:]))

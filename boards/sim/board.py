# Simulated board for the MicroPython unix port. It fails the way the real boards do
# (docs/SIMULATOR_BOARD.md, "Board-faithful hardware"): the hardware is described by the
# JSON file named by $ECOIN_SIM_HW, written by the host (ecoin.sim.hardware), with an ESP32
# or Pico W personality: a clock that starts at the port's epoch default until NTP sets it,
# a WiFi station that joins late and loses the access point, a watchdog that cannot be
# stopped and resets the board, a UART that must be given pins, a sensor that sometimes
# times out, and (Pico W) weak raw random bytes. The model lives in simhw.py, loaded only
# for such a board. Without the file it is the kind board of old: host clock, instant
# network, no watchdog.
import os
import sys
import time

_state = [1, 0]  # LCG state, sample count
_clock = [None, time.ticks_ms(), False]  # the time set at board start; from a time server?
led_on = False
NODELAY = (6, 1)  # IPPROTO_TCP, TCP_NODELAY on the unix port
RESET = 75  # exit status of a reset: the host (ecoin.sim.device) starts the board again
_path = os.getenv("ECOIN_SIM_HW")
if _path:
    import simhw

    hw = simhw.load(_path)
else:
    simhw = None
    hw = {"board": "kind"}
_fail = hw.get("sensor_fail_every")


def setup(cfg):
    _state[0] = (cfg.get("seed") or 1) & 0xFFFF
    if simhw:
        simhw.setup(cfg)


def wifi_board():
    return simhw is not None


def clock():
    """Seconds since 1970 by the board's clock (the port's epoch default until set)."""
    up = time.ticks_diff(time.ticks_ms(), _clock[1]) // 1000
    if _clock[0] is not None:
        return _clock[0] + up
    return hw["epoch"] + up if "epoch" in hw else int(time.time())


def set_time(t, sure=True):
    """Sets the clock; sure: from a time server (readings may carry timestamps)."""
    _clock[0] = int(t) - time.ticks_diff(time.ticks_ms(), _clock[1]) // 1000
    _clock[2] = sure


def now():
    """Seconds since 1970, or 0 while no time server has set the clock."""
    return clock() if _clock[2] or not simhw else 0


def tls(ctx):
    return simhw.DatedContext(ctx, clock) if "epoch" in hw else ctx


def connect_network(cfg, feed=None, wait_ms=15000):
    return simhw.connect_network(cfg, feed, wait_ms) if simhw else True


def random(n):
    return simhw.random(n) if simhw else os.urandom(n)


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


def maintenance(wdt):
    if wdt is not None:
        simhw.feed_in_background(wdt)


def running():
    pass  # the host keeps the watchdog: no maintenance feeder to stop


def reset():
    sys.exit(RESET)


def led(on):
    global led_on
    led_on = bool(on)


def uart(cfg):
    """The UART stand-in: TCP on 127.0.0.1 (simuart.py). serial_port is tcp:<port>, or a
    UART id that the hardware file wires to a port."""
    import simuart

    port = str(cfg["serial_port"])
    if not port.startswith("tcp:"):
        wired = hw.get("uart_tcp", {}).get(port)
        if wired is None:
            raise ValueError("the sim board's UART %s is not wired (serial_port tcp:<port>)" % port)
        port = "tcp:%d" % wired
    return simuart.TcpUart(int(port[4:]))

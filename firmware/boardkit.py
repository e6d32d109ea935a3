# What the real boards (ESP32, Pico W) share: the clock, the watchdog and its maintenance
# feeder, reset, the WiFi station. Imported by boards/<board>/board.py; hardware objects are
# created on first use, never at import.
import time

import wifi

_hw = {}
_sure = [False]  # the clock was set by a time server
# time.time()'s epoch is 2000 on some ports and 1970 on others: seconds to add for 1970.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0


def clock():
    """Seconds since 1970 by the board's clock, set or not."""
    return time.time() + _EPOCH


def set_time(t, sure=True):
    import machine

    y, mo, d, h, mi, s, wd = time.gmtime(int(t) - _EPOCH)[:7]
    machine.RTC().datetime((y, mo, d, wd, h, mi, s, 0))
    _sure[0] = sure


def now():
    """Seconds since 1970, or 0 while no time server has set the clock (an RTC that starts
    at 2021 looks set: only a successful sync counts)."""
    return clock() if _sure[0] else 0


MAINTENANCE_S = 600  # the REPL keeps the watchdog fed this long after a reset, then lets go


def watchdog(timeout_ms, longest=None):
    if not timeout_ms:
        return None
    import machine

    return machine.WDT(timeout=min(timeout_ms, longest or timeout_ms))


def maintenance(wdt):
    """Feeds the watchdog from a timer while the board is at the REPL: once started it cannot
    be stopped and survives a soft reset, and mpremote needs minutes. boot.py starts this
    again after every soft reset; the firmware stops it when it runs."""
    if wdt is None:
        return
    import machine

    t = _hw.get("timer")
    if t is None:
        t = _hw["timer"] = machine.Timer(-1)
    left = [MAINTENANCE_S]

    def feed(_t):
        left[0] -= 1
        if left[0] > 0:  # then the watchdog resets the board into its firmware
            wdt.feed()

    t.init(period=1000, mode=machine.Timer.PERIODIC, callback=feed)


def running():
    """The firmware runs: the maintenance feeder stops (the firmware feeds from its waits)."""
    t = _hw.get("timer")
    if t is not None:
        t.deinit()


def wifi_board():
    return True  # MQTT goes over WiFi here


def reset():
    import machine

    machine.reset()


def connect_network(cfg, feed=None, wait_ms=15000, power_save=None):
    """True once joined to cfg's WiFi (waits up to wait_ms, feeding the watchdog)."""
    import network

    if not cfg.get("wifi_ssid"):
        return False
    wlan = _hw.get("wlan")
    if wlan is None:
        wlan = _hw["wlan"] = network.WLAN(network.STA_IF)
        wlan.active(True)
        if power_save is not None:
            wlan.config(pm=power_save)
    return wifi.keep(wlan, (network.STAT_CONNECTING, 2), cfg["wifi_ssid"], cfg.get("wifi_password"), feed, wait_ms)

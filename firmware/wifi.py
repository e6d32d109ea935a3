# Joining and keeping a WiFi station link, the same on every board (board.py hands over its
# network.WLAN and the statuses that mean "still joining"). Two port behaviours rule it:
# the ESP32 reconnects by itself and raises "Wifi Internal Error" if connect() is called
# while it is connecting; the Pico W (cyw43) never rejoins after an access-point outage.
# So connect() is called only when the station is neither joined nor joining, after
# disconnect(), at most every RETRY_MS; in between the caller's feed keeps the watchdog fed.
import time

RETRY_MS = 10000
_last = [None]  # when connect() was last called


def keep(wlan, busy, ssid, password, feed=None, wait_ms=0):
    """True once the station has an address; waits up to wait_ms (0: one look)."""
    if not wlan.active():
        wlan.active(True)
    end = time.ticks_add(time.ticks_ms(), wait_ms)
    while True:
        if wlan.isconnected():
            return True
        now = time.ticks_ms()
        if wlan.status() not in busy and (_last[0] is None or time.ticks_diff(now, _last[0]) >= RETRY_MS):
            _last[0] = now
            try:
                wlan.disconnect()
                wlan.connect(ssid, password or "")
            except OSError as exc:  # "Wifi Internal Error" and friends: try again later
                print("network: connect to %s failed (%s)" % (ssid, exc))
        if time.ticks_diff(end, time.ticks_ms()) <= 0:
            return False
        if feed:
            feed()
        time.sleep_ms(20)

# The sim board's hardware that fails like the real one (board.py): a WiFi station with the
# ESP32's or the Pico W's manners, a watchdog kept by the host, mbedTLS's date check.
import os
import socket
import sys
import time

_T0 = time.ticks_ms()
_hw = {}
_clock = [None, False]  # the time set at board start; from a time server?
RESET = 75  # exit status of a reset: the host (ecoin.sim.device) starts the board again


def hw():
    return _hw


def _host_open(path, mode="r"):
    """A file on the host by its absolute path, whatever is mounted at / (the pty board
    mounts the flash there)."""
    try:
        import vfs

        return vfs.VfsPosix().open(path, mode)
    except ImportError:  # CPython
        return open(path, mode)


def load(path):
    import json

    with _host_open(path) as f:
        _hw.update(json.load(f))
    if _hw["board"] == "pico_w":
        sys.modules["os"] = _PortOs()  # what the modules imported after the board see
    return _hw


def clock():
    """Seconds since 1970 by the board's clock (the port's epoch default until set)."""
    up = _uptime_ms() // 1000
    if _clock[0] is not None:
        return _clock[0] + up
    return _hw["epoch"] + up if "epoch" in _hw else int(time.time())


def set_time(t, sure=True):
    """Sets the clock; sure: from a time server (readings may carry timestamps)."""
    _clock[0] = int(t) - _uptime_ms() // 1000
    _clock[1] = sure


def now():
    return clock() if _clock[1] or "epoch" not in _hw else 0


def tls(ctx):
    return DatedContext(ctx, clock) if "epoch" in _hw else ctx


def wifi_board():
    return True


def maintenance(wdt):
    if wdt is not None:
        feed_in_background(wdt)


def running():
    _hw["feeding"] = None  # the firmware feeds from its waits: the maintenance feeder stops


def reset():
    sys.exit(RESET)


def setup(cfg):
    if cfg.get("transport") == "serial" and (cfg.get("serial_tx") is None or cfg.get("serial_rx") is None):
        raise ValueError("serial: give serial_tx and serial_rx (the UART's default pins are not wired)")


def connect_network(cfg, feed, wait_ms):
    if not cfg.get("wifi_ssid"):
        return False
    import wifi

    if "wlan" not in _hw:
        _hw["wlan"] = WLAN(_hw)
    wlan = _hw["wlan"]
    return wifi.keep(wlan, wlan.BUSY, cfg["wifi_ssid"], cfg.get("wifi_password"), feed, wait_ms)


def watchdog(timeout_ms):
    if not _hw.get("wdt_port"):
        return None
    if _hw["board"] == "pico_w":
        timeout_ms = min(timeout_ms, 8388)
    return WDT(_hw["wdt_port"], timeout_ms)


def random(n):
    """Raw random bytes as the board's os.urandom gives them (Pico W before 1.28: an 8-bit
    LFSR over ring-oscillator bits, the same sequence after every reset)."""
    if _hw["board"] != "pico_w":
        return os.urandom(n)
    out = bytearray(n)
    x = _hw.get("lfsr", 0xA5)
    for i in range(n):
        for _ in range(8):
            x = ((x << 1) | (((x >> 7) ^ (x >> 5) ^ (x >> 4) ^ (x >> 3)) & 1)) & 0xFF
        out[i] = x
    _hw["lfsr"] = x
    return bytes(out)


class _PortOs:
    """The Pico W port's os as the firmware sees it: os.urandom is the raw source above."""

    def __getattr__(self, name):
        return getattr(os, name)

    def urandom(self, n):
        return random(n)


def _uptime_ms():
    return time.ticks_diff(time.ticks_ms(), _T0)


class WLAN:
    """network.WLAN(STA_IF) as the port gives it. The access point is up while the file
    hw["ap_file"] reads "up"; the station associates hw["wifi_delay"] seconds after power-on
    at the earliest and hw["assoc_s"] after connect(). ESP32: the port reconnects by itself,
    and connect() while it is connecting raises "Wifi Internal Error". Pico W (cyw43): after
    an outage the link stays down until connect() is called again. The host reads the link
    state from hw["link_file"] (traffic passes only while it is "up")."""

    IDLE, CONNECTING, GOT_IP = 1000, 1001, 1010  # network.STAT_* on the ESP32

    def __init__(self, hw):
        self.hw, self.esp = hw, hw["board"] == "esp32"
        if not self.esp:
            self.IDLE, self.CONNECTING, self.GOT_IP = 0, 1, 3  # CYW43_LINK_*
        self.BUSY = (self.CONNECTING, 2)  # 2: cyw43 joined, no IP yet
        self._on = self._want = self._up = False
        self._failed = 0
        self._since = 0
        self._ap_at = 0
        self._ap = (True, 0)
        self._gen = 0  # the outage count when the station joined
        self._said = None

    def active(self, on=None):
        if on is None:
            return self._on
        self._on = bool(on)
        return None

    def _ap_up(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._ap_at) >= 50:  # the file is read at most every 50 ms
            self._ap_at = now
            try:
                with _host_open(self.hw["ap_file"]) as f:
                    word, n = f.read().split()
                self._ap = (word == "up", int(n))
            except (OSError, ValueError):
                pass
        return self._ap

    def _update(self):
        ap, gen = self._ap_up()
        if self._up and (not ap or gen != self._gen):
            self._up = False
            if self.esp:
                self._since = time.ticks_ms()  # the port's own reconnect starts over
            else:
                self._want, self._failed = False, -2  # CYW43_LINK_NONET: nobody rejoins
        elif self._want and not self._up and ap:
            late = _uptime_ms() < int(self.hw.get("wifi_delay", 0) * 1000)
            if not late and time.ticks_diff(time.ticks_ms(), self._since) >= int(self.hw.get("assoc_s", 0.2) * 1000):
                self._up, self._gen = True, gen
        self._tell()

    def _tell(self):
        said = (self._up, self._gen)
        if said != self._said:
            self._said = said
            with _host_open(self.hw["link_file"], "w") as f:
                f.write("up %d" % self._gen if self._up else "down")

    def connect(self, ssid, key=None):
        if not self._on:
            raise OSError("WiFi Not Started" if self.esp else "not active")
        self._update()
        if self.esp and self._want and not self._up:
            raise OSError("Wifi Internal Error")
        self._want, self._failed, self._up = True, 0, False
        self._since = time.ticks_ms()
        self._tell()

    def disconnect(self):
        self._want = self._up = False
        self._tell()

    def isconnected(self):
        self._update()
        return self._up

    def status(self):
        self._update()
        if self._up:
            return self.GOT_IP
        if self._want:
            return self.CONNECTING
        return self._failed or self.IDLE

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")


class WDT:
    """machine.WDT kept by the host: it cannot be stopped, outlives a soft reset, and when
    not fed for timeout ms the host resets the board (ecoin.sim.device). Feeding sends a
    datagram, at most every 100 ms."""

    def __init__(self, port, timeout):
        self.addr = socket.getaddrinfo("127.0.0.1", port, 0, socket.SOCK_DGRAM)[0][-1]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.timeout = timeout
        self._at = time.ticks_ms()
        self.sock.sendto(b"A%d" % timeout, self.addr)

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._at) >= 100:
            self._at = now
            self.sock.sendto(b"F", self.addr)


MAINTENANCE_S = 600  # the REPL keeps the watchdog fed this long after a reset, then lets go


def feed_in_background(wdt):
    """Feeds from a thread (a board: a timer) until running() or MAINTENANCE_S."""
    import _thread

    _hw["feeding"] = (_hw.get("feeding") or 0) + 1  # None once running() stopped the last one
    me = _hw["feeding"]

    def run():
        for _ in range(MAINTENANCE_S):
            if _hw.get("feeding") != me:
                return
            wdt._at = time.ticks_ms()
            wdt.sock.sendto(b"F", wdt.addr)
            time.sleep_ms(1000)

    _thread.start_new_thread(run, ())


def _utc(der, i):
    """The UTCTime (YYMMDDhhmmssZ) at der[i:i+13] in seconds since 1970."""
    d = [int(der[i + k : i + k + 2]) for k in range(0, 12, 2)]
    year = d[0] + (2000 if d[0] < 50 else 1900)
    return time.mktime((year, d[1], d[2], d[3], d[4], d[5], 0, 0)) + (
        946684800 if time.gmtime(0)[0] == 2000 else 0)


class DatedContext:
    """An SSLContext whose handshake fails as mbedTLS's does when the board's clock is
    outside a certificate's validity (MBEDTLS_ERR_X509_CERT_VERIFY_FAILED). mbedTLS checks
    the whole chain; the unix port's SSLSocket has no getpeercert, so the dates checked
    here are the trusted CA's (ca.crt), which a broker certificate's lie within."""

    def __init__(self, ctx, clock, ca_file="ca.crt"):
        import binascii

        self.ctx, self.clock = ctx, clock
        with open(ca_file, "rb") as f:
            pem = f.read()
        body = pem.split(b"-----BEGIN CERTIFICATE-----")[1].split(b"-----END")[0]
        der = binascii.a2b_base64(body.replace(b"\n", b"").replace(b"\r", b""))
        i = der.find(b"\x30\x1e\x17\x0d")  # Validity: two UTCTimes
        self.valid = (_utc(der, i + 4), _utc(der, i + 19)) if i >= 0 else None

    def wrap_socket(self, sock, **kw):
        if self.valid and not self.valid[0] <= self.clock() <= self.valid[1]:
            sock.close()
            raise OSError(-9984, "certificate not valid at the board's time")
        return self.ctx.wrap_socket(sock, **kw)

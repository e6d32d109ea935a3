# MQTT 3.1.1 client for the collector: QoS 0/1 publish with timeout and retransmission,
# QoS 1 subscriptions restored after every reconnect, keepalive pings, and reconnection
# with jittered exponential backoff. Every network call is bounded by io_timeout and every
# wait by the caller's timeout: nothing here blocks forever (field notes: umqtt hangs).
# Buffers are allocated once; an incoming message is handed to on_message as memoryviews
# into the receive buffer, valid only during the call.
import os
import select
import socket
import struct
import time

QUICK_MS = 60000
_REFUSED = ("", "bad protocol", "client id rejected", "unavailable", "bad credentials", "not authorised")


class MQTTError(Exception):
    """The broker refused us or broke the protocol."""


def put_length(buf, pos, n):
    """Writes an MQTT remaining length at buf[pos]; returns the position after it."""
    while True:
        b = n & 0x7F
        n >>= 7
        buf[pos] = b | 0x80 if n else b
        pos += 1
        if not n:
            return pos


def _put_str(buf, pos, s):
    struct.pack_into(">H", buf, pos, len(s))
    buf[pos + 2 : pos + 2 + len(s)] = s
    return pos + 2 + len(s)


def _left(deadline):
    return time.ticks_diff(deadline, time.ticks_ms())


class Client:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 ssl_context=None, io_timeout=5.0, rx_size=4800, clean=False, log=print, nodelay=(6, 1)):
        self.client_id, self.host, self.port = client_id.encode(), host, port
        self.user = user.encode() if user else None
        self.password = password.encode() if password else None
        self.keepalive = keepalive
        self.ssl, self.clean, self.log = ssl_context, clean, log
        self.io_ms = int(io_timeout * 1000)
        # Pauses between connection attempts: the first; the longest in the first QUICK_MS of
        # an outage (a broker restart is over in seconds: back within 2 s of it); the longest.
        self.backoff_ms = (250, 2000, 30000)
        self._down = time.ticks_ms()  # when the link was lost (or first tried)
        self.on_message = None  # fn(topic, payload): memoryviews valid during the call
        self.idle = None  # fn() called while waiting: sampling, watchdog
        self.link = None  # fn() -> bool: the network under us is up (WiFi rejoined if not)
        self.nodelay = nodelay  # (level, option) of TCP_NODELAY on this port's stack
        self._addr = None  # the broker's address, resolved once (rp2's DNS has no timeout)
        self.subs = []
        self.sock = self._io = self._poller = None
        # rx_size: the receive buffer's size, or the buffer (launch.py allocates it early)
        self._rx = rx_size if type(rx_size) is bytearray else bytearray(rx_size)
        self._hdr = bytearray(100)  # fixed headers, topics, acks
        self._one = memoryview(self._hdr)[99:]  # packet headers are read byte by byte
        self._n = 0  # length of the packet in _rx; -1: it did not fit
        self._pid = self._acked = self._subacked = 0
        self._ping_at = None
        self._last_tx = 0
        self.failures = self.connects = 0
        self.wrote = False  # the last publish began to write its payload (it may have left)
        self._next_try = time.ticks_ms()

    # Connection.

    def connect(self):
        """One connection attempt (each step bounded by io_timeout); raises OSError or
        MQTTError. Restores every subscription."""
        self.close()
        self._feed()
        if self._addr is None or self.failures > 2:
            self._addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
            self._feed()
        s = self.sock = socket.socket()
        s.settimeout(self.io_ms / 1000)
        s.connect(self._addr)
        self._feed()
        if self.nodelay:
            try:
                s.setsockopt(self.nodelay[0], self.nodelay[1], 1)  # header and payload go as two writes
            except (OSError, TypeError):
                pass
        if self.ssl:
            s = self.sock = self.ssl.wrap_socket(s, server_hostname=self.host)
            self._feed()
        self._io = s if hasattr(s, "readinto") else s.makefile("rwb", 0)  # CPython: a stream
        self._poller = select.poll()
        self._poller.register(s, select.POLLIN)
        cid, user, pw = self.client_id, self.user, self.password
        n = 12 + len(cid) + (2 + len(user) if user else 0) + (2 + len(pw) if pw else 0)
        buf = bytearray(5 + n)
        buf[0] = 0x10
        p = _put_str(buf, put_length(buf, 1, n), b"MQTT")
        struct.pack_into(">BBH", buf, p, 4, (0x80 if user else 0) | (0x40 if pw else 0) | (2 if self.clean else 0),
                         self.keepalive)
        p = _put_str(buf, p + 4, cid)
        for field in (user, pw):
            if field:
                p = _put_str(buf, p, field)
        self._write(memoryview(buf)[:p])
        end = time.ticks_add(time.ticks_ms(), self.io_ms)
        kind = 0
        while not kind and _left(end) > 0:  # in short slices: the watchdog is fed meanwhile
            kind = self._read(min(100, _left(end)))
            self._feed()
        if kind != 0x20:
            raise MQTTError("no CONNACK")
        if self._rx[1]:
            code = self._rx[1]
            raise MQTTError("connection refused: " + (_REFUSED[code] if code < 6 else str(code)))
        self._ping_at = None
        for topic in self.subs:
            self._subscribe(topic)
        self.connects += 1
        self.failures = 0

    def ensure(self):
        """True when connected; otherwise one attempt if the backoff allows, never waiting."""
        if self.sock is not None:
            return True
        if _left(self._next_try) > 0:
            return False
        if self.link and not self.link():
            self.failures += 1
            self.log("mqtt: no network; attempt %d, next in %d ms" % (self.failures, self._backoff()))
            return False
        try:
            self.connect()
        except MemoryError:
            self.close()
            raise
        except Exception as exc:  # OSError, MQTTError, ValueError (a certificate refused)...
            self.close()
            self.failures += 1
            self.log("mqtt: broker %s:%d unreachable (%s); attempt %d, next in %d ms"
                     % (self.host, self.port, exc, self.failures, self._backoff()))
            return False
        self.log("mqtt: connected to %s:%d" % (self.host, self.port))
        return True

    def _backoff(self):
        first, quick, longest = self.backoff_ms
        if time.ticks_diff(time.ticks_ms(), self._down) < QUICK_MS:
            longest = quick
        delay = min(longest, first << min(self.failures, 8))
        delay = delay // 2 + (delay // 2) * os.urandom(1)[0] // 255  # jitter: 50 to 100 %
        self._next_try = time.ticks_add(time.ticks_ms(), delay)
        return delay

    def close(self, last=None):
        """Closes the connection, writing `last` first (DISCONNECT) if given."""
        if self.sock is not None:
            try:
                if last:
                    self._write(last)
                self.sock.close()
            except OSError:
                pass
        self.sock = self._io = self._poller = None

    def _lost(self, exc):
        self.log("mqtt: connection lost (%s)" % (exc,))
        self.close()
        self.failures = 0
        self._down = time.ticks_ms()
        self._backoff()  # reconnect soon, but never in a tight loop

    def disconnect(self):
        self.close(b"\xe0\x00")

    # Bytes, each call bounded by io_timeout.

    def _write(self, data):
        mv = memoryview(data)
        while len(mv):
            n = self._io.write(mv)
            if not n:
                raise OSError(110)  # ETIMEDOUT
            mv = mv[n:]
        self._last_tx = time.ticks_ms()

    def _readinto(self, mv):
        got = 0
        while got < len(mv):
            n = self._io.readinto(mv[got:] if got else mv)
            if n is None:
                raise OSError(110)  # ETIMEDOUT
            if n == 0:
                raise OSError("closed by the broker")
            got += n

    def _read(self, timeout_ms):
        """Waits up to timeout_ms for a packet and reads it into the receive buffer (bytes
        beyond it are read and dropped). Returns its first byte, or 0 if none came."""
        if not self._poller.poll(max(0, timeout_ms)):
            return 0
        one = self._one
        self._readinto(one)
        kind = one[0]
        n = shift = 0
        while True:
            self._readinto(one)
            n |= (one[0] & 0x7F) << shift
            shift += 7
            if not one[0] & 0x80:
                break
            if shift > 21:
                raise MQTTError("bad remaining length")
        size = min(n, len(self._rx))
        if size:
            self._readinto(memoryview(self._rx)[:size])
        for _ in range(n - size):
            self._readinto(one)
        self._n = -1 if n > size else size
        return kind

    def _pump(self, timeout_ms):
        """Keeps the link alive, then handles at most one packet, waiting up to timeout_ms."""
        now = time.ticks_ms()
        if self._ping_at is not None and time.ticks_diff(now, self._ping_at) > self.io_ms:
            raise OSError("no PINGRESP")
        if self.keepalive and time.ticks_diff(now, self._last_tx) >= self.keepalive * 500:
            self._write(b"\xc0\x00")
            if self._ping_at is None:
                self._ping_at = now
        kind = self._read(timeout_ms)
        rx, t = self._rx, kind & 0xF0
        if t == 0x30:  # PUBLISH
            tl = struct.unpack_from(">H", rx, 0)[0]
            p = 2 + tl
            if kind & 0x06:
                struct.pack_into(">BBH", self._hdr, 0, 0x40, 2, struct.unpack_from(">H", rx, p)[0])
                self._write(memoryview(self._hdr)[:4])  # PUBACK on receipt: at least once
                p += 2
            if self._n < 0:
                self.log("mqtt: dropped a message larger than the receive buffer")
            elif self.on_message:
                mv = memoryview(rx)
                self.on_message(mv[2 : 2 + tl], mv[p : self._n])
        elif t == 0x40:  # PUBACK
            self._acked = struct.unpack_from(">H", rx, 0)[0]
        elif t == 0x90:  # SUBACK
            if rx[2] & 0x80:
                raise MQTTError("subscription refused")
            self._subacked = struct.unpack_from(">H", rx, 0)[0]
        elif t == 0xD0:  # PINGRESP
            self._ping_at = None

    def _feed(self):
        if self.idle:
            self.idle()

    def _pause(self, ms):
        if self.idle:
            self.idle()
        time.sleep_ms(max(0, min(ms, 50)))

    # API.

    def poll(self, timeout_ms):
        """Handles incoming packets for up to timeout_ms (returns after the first one).
        False if not connected (reconnection is tried when its backoff allows)."""
        if not self.ensure():
            self._pause(min(timeout_ms, _left(self._next_try)))
            return False
        try:
            self._pump(timeout_ms)
        except OSError as exc:
            self._lost(exc)
            return False
        return True

    def _subscribe(self, topic):
        self._pid = pid = self._pid % 65535 + 1
        buf = self._hdr
        n = 5 + len(topic)
        buf[0] = 0x82
        p = put_length(buf, 1, n)
        struct.pack_into(">H", buf, p, pid)
        p = _put_str(buf, p + 2, topic)
        buf[p] = 1  # QoS 1
        self._write(memoryview(buf)[: p + 1])
        end = time.ticks_add(time.ticks_ms(), self.io_ms)
        while self._subacked != pid:
            if _left(end) <= 0:
                raise OSError("no SUBACK")
            self._pump(min(100, _left(end)))
            self._feed()

    def subscribe(self, topic):
        """Subscribes to topic (bytes) at QoS 1, now if connected, and again after every
        reconnection."""
        if topic not in self.subs:
            self.subs.append(topic)
        if self.sock is not None:
            try:
                self._subscribe(topic)
            except OSError as exc:
                self._lost(exc)

    def publish(self, topic, payload, qos=1, timeout_ms=None, retries=3):
        """Publishes payload to topic (bytes); at QoS 1 waits for PUBACK, retransmitting (DUP)
        after io_timeout, and after a reconnection. True once acknowledged (QoS 0: once
        written); False if timeout_ms (default: (retries + 1) x io_timeout) ran out first,
        with self.wrote False if no byte of the payload was ever written."""
        if len(topic) > 90:
            raise ValueError("topic too long")
        end = time.ticks_add(time.ticks_ms(), timeout_ms or self.io_ms * (retries + 1))
        self._pid = pid = self._pid % 65535 + 1 if qos else 0
        sent = 0
        self.wrote = False
        while _left(end) > 0:
            if not self.ensure():
                self._pause(min(_left(end), _left(self._next_try)))
                continue
            try:
                buf = self._hdr
                buf[0] = 0x30 | (0x08 if sent else 0) | (qos << 1)
                p = _put_str(buf, put_length(buf, 1, 2 + len(topic) + (2 if qos else 0) + len(payload)), topic)
                if qos:
                    struct.pack_into(">H", buf, p, pid)
                    p += 2
                self._write(memoryview(buf)[:p])
                self.wrote = True
                self._write(payload)  # never copied
                sent += 1
                if not qos:
                    return True
                ack_by = time.ticks_add(time.ticks_ms(), min(self.io_ms, _left(end)))
                while self._acked != pid and _left(ack_by) > 0:
                    self._pump(min(100, _left(ack_by)))
                    if self.idle:
                        self.idle()
                if self._acked == pid:
                    return True
                if sent > retries:
                    raise OSError("no PUBACK after %d tries" % sent)
            except OSError as exc:
                self._lost(exc)
        return False

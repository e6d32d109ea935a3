# Serial transport: the same frames as MQTT, over a UART, for boards without WiFi.
#
# Framing (docs/PROTOCOL.md 7.2): COBS(frame || CRC-32(frame), 4 bytes big-endian) then one
# zero byte. CRC-32 is the IEEE/zlib one, computed here in 16-bit halves so that a 32-bit
# board never allocates a big integer (binascii.crc32 is used where the port has it).
# The link offers the subset of the MQTT client's interface the collector uses, so the
# collector does not care which one it has; topics do not exist on a point-to-point link.
import struct
import time

try:
    from micropython import const
except ImportError:  # CPython (simulator compatibility layer)

    def const(x):
        return x


try:
    from binascii import crc32 as _fast_crc32
except ImportError:
    _fast_crc32 = None

FRAME_MAX = const(4700)  # wire.FRAME_MAX

# CRC-32 (reflected, polynomial 0xEDB88320) of each nibble, split into high and low halves.
_T_HI = (0x0000, 0x1DB7, 0x3B6E, 0x26D9, 0x76DC, 0x6B6B, 0x4DB2, 0x5005,
         0xEDB8, 0xF00F, 0xD6D6, 0xCB61, 0x9B64, 0x86D3, 0xA00A, 0xBDBD)
_T_LO = (0x0000, 0x1064, 0x20C8, 0x30AC, 0x4190, 0x51F4, 0x6158, 0x713C,
         0x8320, 0x9344, 0xA3E8, 0xB38C, 0xC2B0, 0xD2D4, 0xE278, 0xF21C)


def crc32_into(data, out, pos=0):
    """Writes CRC-32(data) big-endian into out[pos:pos+4] with small integers only."""
    hi = lo = 0xFFFF
    for b in data:
        for nib in (b & 0xF, b >> 4):
            i = (lo ^ nib) & 0xF
            lo = ((lo >> 4) | ((hi & 0xF) << 12)) ^ _T_LO[i]
            hi = (hi >> 4) ^ _T_HI[i]
    hi ^= 0xFFFF
    lo ^= 0xFFFF
    out[pos] = hi >> 8
    out[pos + 1] = hi & 0xFF
    out[pos + 2] = lo >> 8
    out[pos + 3] = lo & 0xFF


def crc32(data, out, pos=0):
    if _fast_crc32 is not None:
        struct.pack_into(">I", out, pos, _fast_crc32(data) & 0xFFFFFFFF)
    else:
        crc32_into(data, out, pos)


def cobs_decode(buf, n):
    """Decodes the COBS bytes buf[:n] in place; returns the decoded length, or -1 if invalid."""
    r = w = 0
    while r < n:
        code = buf[r]
        r += 1
        end = r + code - 1
        if code == 0 or end > n:
            return -1
        while r < end:
            buf[w] = buf[r]
            w += 1
            r += 1
        if code != 0xFF and r < n:
            buf[w] = 0
            w += 1
    return w


class SerialLink:
    """Frames over a stream with non-blocking readinto(buf) and write(buf) (a machine.UART,
    or the simulator's TCP stand-in)."""

    def __init__(self, stream, max_frame=FRAME_MAX, log=print):
        self.stream = stream
        self.log = log
        self.on_message = None
        self.idle = None
        self.frames = self.dropped = 0
        self.connects = 0  # a UART never reconnects (the collector compares it with MQTT's)
        # COBS adds one byte per 254 and one at the start; the CRC four.
        self._max = min(max_frame, FRAME_MAX) + 4 + max_frame // 254 + 2
        self._rx = bytearray(self._max)
        self._rxv = memoryview(self._rx)
        self._n = 0
        self._skipping = False
        self._chunk = bytearray(128)
        self._blk = bytearray(255)
        self._crc = bytearray(4)

    # The collector's transport interface.

    def ensure(self):
        return True

    def subscribe(self, topic):
        pass

    def disconnect(self):
        pass

    def publish(self, topic, frame, qos=1, timeout_ms=None, retries=0):
        """Sends one frame; True once written (delivery is checked end to end)."""
        if len(frame) > FRAME_MAX:
            raise ValueError("frame too large")
        crc32(frame, self._crc)
        self._encode(frame)
        return True

    def poll(self, timeout_ms):
        """Reads what arrives for up to timeout_ms; returns after delivering a frame."""
        deadline = time.ticks_add(time.ticks_ms(), max(0, timeout_ms))
        while True:
            n = self.stream.readinto(self._chunk)
            if n:
                if self._feed(n):
                    return True
                continue
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return True
            if self.idle:
                self.idle()
            time.sleep_ms(5)

    # Framing.

    def _encode(self, frame):
        blk = self._blk
        k = 1
        full = False
        for data in (frame, self._crc):
            for b in data:
                if b == 0:
                    blk[0] = k
                    self._write(k)
                    k, full = 1, False
                else:
                    blk[k] = b
                    k += 1
                    if k == 255:
                        blk[0] = 255
                        self._write(255)
                        k, full = 1, True
        if k > 1 or not full:
            blk[0] = k
            self._write(k)
        blk[0] = 0
        self._write(1)

    def _write(self, n):
        mv = memoryview(self._blk)[:n]
        while len(mv):
            w = self.stream.write(mv)
            if w is None:  # a full buffer on a non-blocking stream
                time.sleep_ms(1)
                continue
            mv = mv[w:]

    def _feed(self, count):
        """Takes count bytes from the chunk; returns True if a frame was delivered."""
        delivered = False
        rx = self._rx
        for i in range(count):
            b = self._chunk[i]
            if b:
                if self._n < self._max:
                    rx[self._n] = b
                    self._n += 1
                elif not self._skipping:
                    self._skipping = True  # too long: drop it up to the next zero
                continue
            n, self._n = self._n, 0
            if self._skipping or not n:
                if self._skipping:
                    self.dropped += 1
                self._skipping = False
                continue
            if self._frame(n):
                delivered = True
        return delivered

    def _frame(self, n):
        n = cobs_decode(self._rx, n)
        if n < 5 or n > FRAME_MAX + 4:
            self.dropped += 1
            return False
        crc32(self._rxv[: n - 4], self._crc)
        if self._crc != self._rx[n - 4 : n]:
            self.dropped += 1
            return False
        self.frames += 1
        if self.on_message:
            self.on_message(None, self._rxv[: n - 4])
        return True

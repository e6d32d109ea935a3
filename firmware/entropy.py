# Conditioned random bytes for op_ids, IVs and OAEP seeds. The Pico W's os.urandom (before
# MicroPython 1.28) is ring-oscillator bits through an 8-bit LFSR whose state starts the same
# at every reset; the ESP32's is good while the radio is on. Either way the raw bytes go into
# a SHA-256 pool with timing jitter, and what leaves is a hash of the pool (a hash DRBG,
# reseeded at every call), never the raw bytes. Installed at boot as ucrypto's "os".
import hashlib
import time


def _jitter(h, rounds):
    for _ in range(rounds):
        t = time.ticks_us()
        h.update(bytes((t & 0xFF, (t >> 8) & 0xFF, (t >> 16) & 0xFF)))


class Source:
    def __init__(self, raw):
        self.raw = raw
        h = hashlib.sha256(b"ecoin-entropy")
        for _ in range(8):
            h.update(raw(32))
            _jitter(h, 8)
        self.pool = h.digest()

    def urandom(self, n):
        """n conditioned bytes; the pool moves on, so earlier outputs cannot be recomputed
        from a later pool."""
        h = hashlib.sha256(b"\x01" + self.pool)
        h.update(self.raw(32))
        _jitter(h, 4)
        seed = h.digest()
        out = b""
        i = 0
        while len(out) < n:
            out += hashlib.sha256(b"\x02" + seed + bytes((i,))).digest()
            i += 1
        self.pool = hashlib.sha256(b"\x03" + seed).digest()
        return out[:n]


def install(board, ucrypto):
    """Makes every random byte the protocol modules take conditioned."""
    import os

    ucrypto.os = Source(getattr(board, "random", None) or os.urandom)

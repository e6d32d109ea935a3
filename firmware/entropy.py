# Conditioned random bytes for op_ids, IVs and OAEP seeds. The Pico W's os.urandom (before
# MicroPython 1.28) is ring-oscillator bits through an 8-bit LFSR whose state starts the same
# at every reset; the ESP32's is good while the radio is on. Either way the raw bytes go into
# a SHA-256 pool with timing jitter, and what leaves is a hash of the pool (a hash DRBG,
# reseeded at every call), never the raw bytes. The module itself becomes ucrypto's "os";
# install() is deleted once used (a small heap counts every function).
import hashlib
import time

_s = [b"", None]  # the pool; the raw source


def urandom(n):
    """n conditioned bytes; the pool moves on, so earlier outputs cannot be recomputed
    from a later pool."""
    h = hashlib.sha256(b"\x01" + _s[0])
    h.update(_s[1](32))
    h.update((time.ticks_us() & 0xFFFFFFFF).to_bytes(4, "little"))
    seed = h.digest()
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"\x02" + seed + bytes((i,))).digest()
        i += 1
    _s[0] = hashlib.sha256(b"\x03" + seed).digest()
    return out[:n]


def install(board, ucrypto):
    """Seeds the pool from 256 raw bytes and 64 timing samples; makes every random byte the
    protocol modules take conditioned."""
    import os
    import sys

    raw = getattr(board, "random", None) or os.urandom
    h = hashlib.sha256(b"ecoin-entropy")
    for _ in range(8):
        h.update(raw(32))
        for _ in range(8):
            h.update((time.ticks_us() & 0xFFFFFFFF).to_bytes(4, "little"))
    _s[0], _s[1] = h.digest(), raw
    me = sys.modules["entropy"]
    ucrypto.os = me
    del me.install

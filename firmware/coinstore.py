# Coin store: the device's money, in flash, spent at most once even if power fails anywhere.
#
# Files (relative to the flash root; MicroPython's open() is relative to the current dir):
#   coins.<gen>.bin  the coins, 32 bytes each; never modified once written.
#   state.bin        magic | gen | next | count | counter | pending | op_id | coin (69 bytes,
#                    big-endian): coins [next, count) of coins.<gen>.bin are unused; counter is
#                    the last top-up counter used; pending marks the operation in flight.
#   doubt.bin        append-only, 64-byte records: op_id | coin | reason | 3 zero | time | 8 zero.
#
# state.bin is only ever replaced whole: written to state.tmp, then renamed (atomic on littlefs
# and POSIX). A coin is taken, and recorded as pending with its op_id, BEFORE it can leave the
# device; after a power loss start.py moves a pending coin to the in-doubt store. So a coin is
# always unused (index >= next), spent, or in doubt, and none is ever taken twice.
# This module is what the running device needs; opening and repairing the store at boot is in
# start.py, adding topped-up coins in topup.py (both loaded only when needed).
import os
import struct
import time

try:
    from micropython import const
except ImportError:  # CPython (simulator compatibility layer)

    def const(x):
        return x


# The layout, the one definition: the host (ecoin.tools.provisioning.flash) reads the store
# through these names, so this module stays importable by CPython.
FMT = ">4sIIIIB16s32s"
MAGIC = b"ECS1"
STATE_LEN = const(69)  # struct.calcsize(FMT)
COIN = const(32)
# settled.bin: 16-byte op_ids of in-doubt records that got a final answer: claimed by the
# owner at the bank (appended by `ecoin-provision refund`) or answered late by a RESULT that
# verified (settle() below); at boot start.py drops those records from doubt.bin.
SETTLED = "settled.bin"
RECORD = const(64)
_LATE = const(16)  # a late RESULT is matched against the newest in-doubt records only
_NONE = bytes(32)

# Why a coin is in doubt (1..5 are the ERROR codes of PROTOCOL.md 4.3).
R_TIMEOUT = const(10)  # no answer in time
R_BAD_TAG = const(11)  # a RESULT whose tag, op_id or padding did not check out
R_NOT_SENT = const(12)  # the broker never acknowledged the OPERATION (it may have left)
R_RESTART = const(13)  # the operation was cut: power lost, restart, Ctrl-C, error
R_BAD_RESULT = const(14)  # the result decrypted but is not the JSON the protocol says


class NoCoins(Exception):
    pass


def replace(tmp, dst):
    # littlefs and POSIX replace atomically; FAT refuses an existing target, so there (only)
    # remove first: start.py then finds the complete tmp file and renames it.
    try:
        os.rename(tmp, dst)
    except OSError:
        os.remove(dst)
        os.rename(tmp, dst)


class CoinStore:
    def __init__(self, fields):
        self.gen, self.next, self.count, self.counter = fields[1:5]
        self.op_id = fields[6] if fields[5] else None  # the pending operation
        self._coin = bytearray(fields[7])
        self._peeked = -1
        self._buf = bytearray(STATE_LEN)
        self._rec = bytearray(RECORD)

    def left(self):
        return self.count - self.next

    def save(self):
        p = self.op_id is not None
        struct.pack_into(FMT, self._buf, 0, MAGIC, self.gen, self.next, self.count, self.counter,
                         p, self.op_id if p else _NONE[:16], self._coin if p else _NONE)
        with open("state.tmp", "wb") as f:
            f.write(self._buf)
        replace("state.tmp", "state.bin")

    def peek(self):
        """The next unused coin (a buffer valid until the next peek), still unused: an
        operation can be built with it, and abandoned, before take() commits it."""
        if self.next >= self.count:
            raise NoCoins()
        with open("coins.%d.bin" % self.gen, "rb") as f:
            f.seek(self.next * COIN)
            if f.readinto(self._coin) != COIN:
                raise OSError("coin file shorter than state.bin says")
        self._peeked = self.next
        return self._coin

    def take(self, op_id):
        """Records durably that the next coin is used, by operation op_id, and returns it.
        Call it before the coin can leave the device."""
        if self.op_id is not None:  # never lose track of a coin: the earlier one is in doubt
            self.doubt(R_RESTART)
        if self._peeked != self.next:
            self.peek()
        self._peeked = -1  # a peek is good for one take
        self.next += 1
        self.op_id = op_id
        self.save()  # from here on the coin counts as used, whatever happens
        return self._coin

    def spent(self):
        """The pending operation got a good result: its coin is spent."""
        self.op_id = None
        self.save()

    def doubt(self, reason):
        """The pending operation failed or went unanswered: its coin goes in doubt. The record
        goes first: a power loss in between repeats nothing (start.py checks op_ids)."""
        if self.op_id is None:
            return
        r = self._rec
        r[:] = bytes(RECORD)
        r[0:16] = self.op_id
        r[16:48] = self._coin
        r[48] = reason
        t = int(time.time())
        struct.pack_into(">I", r, 52, t if 0 < t < 0xFFFFFFFF else 0)
        with open("doubt.bin", "ab") as f:
            f.write(r)
        self.op_id = None
        self.save()

    def doubt_count(self):
        """Whole records in doubt.bin (settled ones included until the next boot drops them)."""
        return _size("doubt.bin") // RECORD

    def doubted(self, op_id):
        """The coin of op_id's in-doubt record if it is among the newest _LATE and not settled,
        else None: a late RESULT is verified under keys derived from it (collector.py)."""
        n = self.doubt_count()
        k, r, coin = min(n, _LATE), self._rec, None
        if k:
            with open("doubt.bin", "rb") as f:
                f.seek((n - k) * RECORD)
                for _ in range(k):
                    if f.readinto(r) == RECORD and r[:16] == op_id:
                        coin = bytes(r[16:48])
        if coin is None or _settled(op_id):
            return None
        return coin

    def settle(self, op_id):
        """op_id's doubt is over (its RESULT came late): the owner's claim skips it and the next
        boot drops it. A torn earlier append is padded over, so entries stay 16-byte aligned."""
        pad = _size(SETTLED) % 16
        with open(SETTLED, "ab") as f:
            if pad:
                f.write(bytes(16 - pad))
            f.write(op_id)


def _size(name):
    try:
        return os.stat(name)[6]
    except OSError:
        return 0


def listed(op_id, ids):
    """True if op_id is one of the 16-byte entries of ids (a chunk of settled.bin)."""
    i = ids.find(op_id)
    while i >= 0:
        if i % 16 == 0:
            return True
        i = ids.find(op_id, i + 1)
    return False


def _settled(op_id):
    if not _size(SETTLED):
        return False
    with open(SETTLED, "rb") as f:
        while True:
            ids = f.read(512)
            if not ids:
                return False
            if listed(op_id, ids):
                return True

# Coin store: the device's money, in flash, spent at most once even if power fails anywhere.
#
# Files (relative to the flash root; MicroPython's open() is relative to the current dir):
#   coins.<gen>.bin  the coins, 32 bytes each; never modified once written.
#   state.bin        magic | gen | next | count | counter | pending | op_id | coin (69 bytes,
#                    big-endian): coins [next, count) of coins.<gen>.bin are unused; counter is
#                    the last top-up counter used; pending is the number of coins (1 to 4, the
#                    price) of the operation in flight, 0 if none: coins [next - pending, next),
#                    the first of them also in state.bin's coin field.
#   doubt.bin        append-only, 64-byte records: op_id | coin | reason | 3 zero | time | 8 zero,
#                    one per coin (an operation that paid 3 coins leaves 3 records, one op_id).
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
# verified (late.py); at boot start.py drops those records from doubt.bin.
DOUBT = "doubt.bin"
SETTLED = "settled.bin"
RECORD = const(64)
_NONE = bytes(32)

# Why a coin is in doubt (1..5 are the ERROR codes of PROTOCOL.md 4.3).
R_TIMEOUT = const(10)  # no answer in time
R_BAD_TAG = const(11)  # a RESULT whose tag, op_id or padding did not check out
R_NOT_SENT = const(12)  # the broker never acknowledged the OPERATION (it may have left)
R_RESTART = const(13)  # the operation was cut: power lost, restart, Ctrl-C, error
R_BAD_RESULT = const(14)  # the result decrypted but is not the JSON the protocol says
R_OVERPAID = const(15)  # answered, but charged fewer coins than the header held: the rest


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
        self.pending = fields[5]  # coins of the pending operation
        self.op_id = fields[6] if fields[5] else None  # the pending operation
        self._coin = bytearray(fields[7])  # the coins of one operation (resized by peek)
        self._peeked = -1  # (index, count) of the last peek
        self._buf = bytearray(STATE_LEN)
        self._rec = bytearray(RECORD)

    def left(self):
        return self.count - self.next

    def save(self):
        p = self.op_id is not None
        # (a "32s" field takes the first 32 bytes of the coins)
        struct.pack_into(FMT, self._buf, 0, MAGIC, self.gen, self.next, self.count, self.counter,
                         self.pending if p else 0, self.op_id if p else _NONE[:16], self._coin if p else _NONE)
        with open("state.tmp", "wb") as f:
            f.write(self._buf)
        replace("state.tmp", "state.bin")

    def _read(self, index, buf):
        with open("coins.%d.bin" % self.gen, "rb") as f:
            f.seek(index * COIN)
            if f.readinto(buf) != len(buf):
                raise OSError("coin file shorter than state.bin says")

    def peek(self, n=1):
        """The next n unused coins, back to back (a buffer valid until the next peek), still
        unused: an operation can be built with them, and abandoned, before take() commits."""
        if self.next + n > self.count:
            raise NoCoins()
        if len(self._coin) != n * COIN:  # only when the price changes: no garbage per operation
            self._coin = bytearray(n * COIN)
        self._read(self.next, self._coin)
        self._peeked = self.next * 8 + n
        return self._coin

    def take(self, op_id, n=1):
        """Records durably that the next n coins are used, by operation op_id, and returns
        them. Call it before the coins can leave the device."""
        if self.op_id is not None:  # never lose track of a coin: the earlier ones are in doubt
            self.doubt(R_RESTART)
        if self._peeked != self.next * 8 + n:
            self.peek(n)
        self._peeked = -1  # a peek is good for one take
        self.next += n
        self.pending = n
        self.op_id = op_id
        self.save()  # from here on the coins count as used, whatever happens
        return self._coin

    def untake(self):
        """The pending operation's frame never began to leave the device (no byte of it was
        written to the network): its coin goes back to unused, as if never taken."""
        if self.op_id is None:
            return
        self.next -= 1
        self.op_id = None
        self.save()

    def spent(self):
        """The pending operation got a good result: its coins are spent."""
        self.op_id = None
        self.save()

    def doubt(self, reason, done=0):
        """The pending operation failed or went unanswered: its coins go in doubt, one record
        each (after the `done` that a power loss let start.py find). The records go first: a
        power loss in between repeats nothing (start.py counts the op_id's records)."""
        if self.op_id is None:
            return
        r = self._rec
        r[:] = bytes(RECORD)
        r[0:16] = self.op_id
        r[48] = reason
        t = int(time.time())
        struct.pack_into(">I", r, 52, t if 0 < t < 0xFFFFFFFF else 0)
        coin = memoryview(r)[16:48]
        with open(DOUBT, "ab") as f:
            for i in range(self.next - self.pending + done, self.next):
                self._read(i, coin)  # the coin file is never modified (and kept while pending)
                f.write(r)
        self.op_id = None
        self.save()

    def doubt_count(self):
        """Whole records in doubt.bin (settled ones included until the next boot drops them)."""
        return size(DOUBT) // RECORD


def size(name):
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

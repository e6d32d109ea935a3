"""Correlation data that routes a reply by itself, so that a gateway restart loses no answer.

The gateway publishes each operation with correlation data naming where its answer goes
(the device and its route), until when the device waits (a wall-clock deadline: a restarted
process has a new monotonic clock), and a counter; a MAC (keyed BLAKE2b, 16 bytes: a MAC by
design and the cheapest one in hashlib, it runs for every operation) under a key kept in the
gateway's SQLite store binds these and the operation's op_id. A reply whose operation is no longer in
memory (the gateway was killed and restarted meanwhile) is relayed if the MAC holds for the
reply's op_id and the deadline has not passed; anything else is dropped.

The MAC is what makes this safe to trust: an analyst sees the correlation data of the
operations it serves, but cannot make one for another device, another op_id or a later
deadline. It adds no secrecy: correlation data is no protection for a device, which accepts
a RESULT only with a valid tag under its operation's key (docs/GATEWAY.md).

    version u8 | deadline u32 (unix s) | route u8 (0 mqtt, 1 serial) | n u8 | device n | seq u64 | mac 16
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import NamedTuple

VERSION = 1
MAC_LEN = 16
_HEAD = struct.Struct(">BIBB")
_SEQ = struct.Struct(">Q")
SERIAL_PREFIX = "serial:"


class Route(NamedTuple):
    route: str  # "mqtt" or "serial:<device>"
    device: str
    deadline: float  # unix seconds


class Correlator:
    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("the correlation key must be 16 to 64 bytes")
        self._key = key

    def _mac(self, body: bytes, op_id: bytes) -> bytes:
        return hashlib.blake2b(body + op_id, key=self._key, digest_size=MAC_LEN).digest()

    def make(self, route: str, device: str, op_id: bytes, deadline: float, seq: int) -> bytes:
        name = device.encode()
        kind = 1 if route.startswith(SERIAL_PREFIX) else 0
        body = _HEAD.pack(VERSION, int(deadline) + 1, kind, len(name)) + name + _SEQ.pack(seq)
        return body + self._mac(body, op_id)

    def open(self, corr: object, op_id: bytes) -> Route | None:
        """Where a reply with this correlation data and op_id goes; None if the data was
        not made by this gateway for this op_id (the MAC is compared in constant time)."""
        if not isinstance(corr, bytes) or len(corr) < _HEAD.size + _SEQ.size + MAC_LEN:
            return None
        version, deadline, kind, n = _HEAD.unpack_from(corr)
        body_len = _HEAD.size + n + _SEQ.size
        if version != VERSION or kind > 1 or len(corr) != body_len + MAC_LEN:
            return None
        body = corr[:body_len]
        if not hmac.compare_digest(corr[body_len:], self._mac(body, op_id)):
            return None
        try:
            device = body[_HEAD.size : _HEAD.size + n].decode()
        except UnicodeDecodeError:
            return None
        route = SERIAL_PREFIX + device if kind else "mqtt"
        return Route(route, device, float(deadline))

"""Serial framing (docs/PROTOCOL.md 7.2): ``COBS(frame || CRC-32(frame))`` then a zero byte.

``encode`` builds one wire chunk; ``Decoder`` takes bytes as they come off the UART and
yields whole frames, dropping (and counting) any chunk that is too long or fails its CRC.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from ecoin.protocol import wire

CRC_LEN = 4
# The longest legal stuffed chunk: frame + CRC plus one overhead byte per 254 data bytes.
RAW_MAX = wire.FRAME_MAX + CRC_LEN
STUFFED_MAX = RAW_MAX + RAW_MAX // 254 + 2


class FramingError(ValueError):
    """A chunk that is not valid COBS, is too long, or fails its CRC."""


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    start = 0
    n = len(data)
    while True:
        end = data.find(b"\0", start, min(n, start + 254))
        if end < 0:
            end = min(n, start + 254)
            out.append(end - start + 1)
            out += data[start:end]
            if end == n:
                return bytes(out)
            start = end  # a full 254-byte block: no implied zero follows it
            continue
        out.append(end - start + 1)
        out += data[start:end]
        start = end + 1


def cobs_decode(chunk: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(chunk)
    while i < n:
        code = chunk[i]
        if code == 0:
            raise FramingError("zero byte inside a COBS chunk")
        end = i + code
        if end > n:
            raise FramingError("COBS block runs past the chunk")
        block = chunk[i + 1 : end]
        if 0 in block:
            raise FramingError("zero byte inside a COBS chunk")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode(frame: bytes) -> bytes:
    """The bytes to write to the port for one frame, the terminating zero included."""
    raw = bytes(frame) + zlib.crc32(frame).to_bytes(CRC_LEN, "big")
    return cobs_encode(raw) + b"\0"


def decode(chunk: bytes) -> bytes:
    """One chunk (without its zero byte) back to a frame; raises FramingError."""
    raw = cobs_decode(chunk)
    if len(raw) <= CRC_LEN:
        raise FramingError("chunk too short for a CRC")
    if len(raw) > RAW_MAX:
        raise FramingError("chunk longer than FRAME_MAX + 4")
    frame, crc = raw[:-CRC_LEN], raw[-CRC_LEN:]
    if zlib.crc32(frame).to_bytes(CRC_LEN, "big") != crc:
        raise FramingError("CRC mismatch")
    return frame


class Decoder:
    """Reassembles frames from a byte stream. Overlong input is discarded up to the next zero
    byte without being kept, so a noisy line cannot grow memory."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.dropped = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        start = 0
        while True:
            end = data.find(b"\0", start)
            if end < 0:
                self._append(data[start:])
                return
            self._append(data[start:end])
            frame = self._finish()
            if frame is not None:
                yield frame
            start = end + 1

    def _append(self, part: bytes) -> None:
        if self._overflow or not part:
            return
        if len(self._buf) + len(part) > STUFFED_MAX:
            self._overflow = True
            self._buf.clear()
            return
        self._buf += part

    def _finish(self) -> bytes | None:
        chunk, overflow = bytes(self._buf), self._overflow
        self._buf.clear()
        self._overflow = False
        if overflow:
            self.dropped += 1
            return None
        if not chunk:  # back-to-back zeros: an idle line or a resync, not a frame
            return None
        try:
            return decode(chunk)
        except FramingError:
            self.dropped += 1
            return None

"""What the gateway may relay: replies are checked for shape only (it holds no key)."""

from __future__ import annotations

from ecoin.protocol import wire


def relayable(frame: bytes, op_id: bytes) -> tuple[str, bytes] | None:
    """(kind, frame to relay) for a well-formed RESULT or ERROR answering ``op_id``, else
    None. An ERROR code the gateway does not know becomes FAILED: a device is never handed
    a code its specification does not define (every ERROR means "in doubt" anyway)."""
    try:
        ftype, got = wire.frame_type(frame)
        if got != op_id:
            return None
        if ftype == wire.T_RESULT:
            wire.decode_result(frame)
            return "result", bytes(frame)
        if ftype == wire.T_ERROR and len(frame) == wire.PREFIX_LEN + 1:
            if frame[wire.PREFIX_LEN] in wire.ERROR_CODES:
                return "error", bytes(frame)
            return "error", bytes(wire.encode_error(op_id, wire.E_FAILED))
    except (wire.InvalidFrame, TypeError):
        pass
    return None


def frame_is(frame: bytes, ftype: int, op_id: bytes) -> bool:
    try:
        t, got = wire.frame_type(frame)
    except (wire.InvalidFrame, TypeError):
        return False
    return t == ftype and got == op_id

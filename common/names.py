"""The one alphabet of names (device, account, analyst and gateway ids; service names).

protocol/wire.py defines it for the frames; everything on the host side (ledger, bank
routes, topics, PKI, provisioning) derives its patterns here, so they cannot drift apart.
"""

from __future__ import annotations

import re

from ecoin.protocol import wire


def _pattern(chars: bytes) -> str:
    return "[" + re.escape(chars.decode()) + "]{1," + str(wire.NAME_MAX) + "}"


ID = _pattern(wire.DEVICE_CHARS)  # any party's id; also a certificate's CN
SERVICE = _pattern(wire.SERVICE_CHARS)
ID_RE = re.compile(ID + r"\Z")
SERVICE_RE = re.compile(SERVICE + r"\Z")
ID_RULE = f"1 to {wire.NAME_MAX} of A-Z a-z 0-9 . _ -"
SERVICE_RULE = f"1 to {wire.NAME_MAX} of a-z 0-9 . _ -"


def is_id(value: str) -> bool:
    return bool(ID_RE.match(value))


def is_service(value: str) -> bool:
    return bool(SERVICE_RE.match(value))

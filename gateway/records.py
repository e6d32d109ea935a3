"""The records the router passes between its parts, named instead of positional tuples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Op(NamedTuple):
    """An operation on its way upstream: from the device's frame to its publication."""

    route: str  # how the answer goes back: "mqtt" or "serial:<device>"
    device: str
    service: str
    op_id: bytes
    frame: bytes
    started: float  # monotonic time the device's frame came in


@dataclass(slots=True)
class Pending:
    """An operation published upstream and awaited until its deadline."""

    corr: bytes  # the correlation data it was published with
    device: str
    route: str
    op_id: bytes
    started: float
    deadline: float  # monotonic; no reply by then: ERROR TIMEOUT
    replies: int = 0  # relayed so far; at the deadline, none means ERROR TIMEOUT


class Query(NamedTuple):
    """A QUERY held until the directory is complete (just after a start or a reconnect)."""

    route: str
    device: str
    op_id: bytes
    service: str
    until: float  # monotonic; answered from whatever the directory knows by then

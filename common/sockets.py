"""What every ecoin MQTT client (gateway, analyst, benches) sets on its socket.

paho leaves Nagle's algorithm on. An MQTT client writes small packets back to back (a
reply, then the PUBACK of the operation it answers); with Nagle the second waits for the
peer's ACK of the first, which Linux may delay by up to 40 ms: throughput then collapses
to a few hundred messages per second on some kernels and not on others.
"""

from __future__ import annotations

import socket
from typing import Any


def nodelay(client: Any, userdata: Any, sock: Any) -> None:
    """paho's ``on_socket_open`` hook: TCP_NODELAY on the new socket (TLS-wrapped too)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (a test's socketpair): nothing to tune

"""What firmware tests and the device bench share: fast settings and a broker without Nagle."""

from __future__ import annotations

from pathlib import Path

from ecoin.testing.servers import Mosquitto, free_port

FAST = {  # an operation as often as the firmware can: tests want many short ones
    "service": "average",
    "sample_interval": 0.005,
    "batch_seconds": 0.02,
    "batch_max": 16,
    "query_timeout": 3.0,
    "op_timeout": 3.0,
    "io_timeout": 2.0,
    "keepalive": 10,
    "low_coins": 0,
    "wifi_ssid": "ecoin-test",
}


def nodelay_broker(workdir: Path, port: int | None = None) -> Mosquitto:
    """A plain broker that sends small packets at once: with Nagle on (Mosquitto's default)
    every answer to a device waits for a delayed ACK, about 40 ms."""
    port = port or free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
    return Mosquitto(workdir, conf, port)

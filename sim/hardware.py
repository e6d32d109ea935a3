"""The host side of the board-faithful simulated board (``boards/sim``): what the hardware
around a simulated device does. ``Hardware`` describes the board (written as JSON for the
firmware's ``board.py`` to read); ``AccessPoint`` is a WiFi network that can go away and
come back; ``Radio`` is one device's link through it (a TCP relay to the broker that
carries traffic only while the AP is up and the device's station is joined, optionally
slow); ``WatchdogMonitor`` keeps the board's watchdog, which the device feeds by datagram.
See docs/SIMULATOR_BOARD.md, "Board-faithful hardware"."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ecoin.common import files
from ecoin.testing.relay import Relay

EPOCHS = {"esp32": 946684800, "pico_w": 1609459200}  # 2000-01-01, 2021-01-01: the ports' RTC defaults
BOARDS = ("esp32", "pico_w", "kind")


@dataclass
class Hardware:
    """One simulated board. ``board``: the personality ("esp32", "pico_w"; "kind" is the
    old host-clock, instant-network board). Every behaviour is on unless turned off."""

    board: str = "esp32"
    clock_unset: bool = True  # the clock starts at the port's epoch default until set_time
    wifi_delay: float = 0.0  # seconds after power-on before the station can join
    assoc_s: float = 0.2  # seconds from connect() to an address
    watchdog: bool = True  # a machine.WDT that resets the board when not fed
    sensor_fail_every: int = 0  # every n-th sensor reading raises OSError (0: never)
    uart_tcp: dict[str, int] = field(default_factory=dict)  # UART id -> the TCP port standing in for it

    def __post_init__(self) -> None:
        if self.board not in BOARDS:
            raise ValueError(f"board must be one of {', '.join(BOARDS)}")

    def describe(self, ap_file: Path, link_file: Path, wdt_port: int | None) -> dict[str, object]:
        """The JSON the firmware's board.py reads."""
        out: dict[str, object] = {**asdict(self), "ap_file": str(ap_file), "link_file": str(link_file)}
        if self.clock_unset and self.board in EPOCHS:
            out["epoch"] = EPOCHS[self.board]
        if self.watchdog and wdt_port:
            out["wdt_port"] = wdt_port
        return out


class AccessPoint:
    """A WiFi network, up or down; shared by the devices that join it. Its state is a file
    the boards read: "up N" or "down N", N counting the outages (a station joined before
    outage N is no longer joined, whether or not it looked in between)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.file = directory / "ap"
        self.outages = 0
        self.up()

    def state(self) -> tuple[bool, int]:
        word, n = self.file.read_text().split()
        return word == "up", int(n)

    @property
    def is_up(self) -> bool:
        return self.state()[0]

    def up(self) -> None:
        files.write_atomic(self.file, f"up {self.outages}")  # never read half written

    def down(self) -> None:
        self.outages += 1
        files.write_atomic(self.file, f"down {self.outages}")


def _link(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class Radio(Relay):
    """A device's network path to (host, port): a TCP relay on 127.0.0.1:``port`` that
    passes traffic only while ``ap`` is up and the device's station is joined (its
    ``link_file`` says "up"), dropping every connection the moment either goes.
    ``latency`` seconds delay every byte each way (a poor network: bytes sent together
    arrive together, in order)."""

    def __init__(
        self, target: tuple[str, int], ap: AccessPoint, link_file: Path, latency: float = 0.0
    ) -> None:
        self.ap, self.link_file = ap, link_file
        super().__init__(target, self.joined, latency)

    def joined(self) -> bool:
        up, n = self.ap.state()
        return up and _link(self.link_file) == f"up {n}"


class WatchdogMonitor:
    """The board's watchdog, kept on the host so that it outlives the MicroPython process
    (a soft reset) and cannot be stopped from the board. The device arms it (``A<ms>``) and
    feeds it (``F``) by UDP datagram; ``expired()`` once it went unfed for its timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.port = self.sock.getsockname()[1]
        self.timeout_ms: int | None = None
        self.fed = time.monotonic()

    def poll(self, wait: float = 0.02) -> None:
        """Takes the datagrams that came (waits up to ``wait`` seconds for the first)."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(64)
                if data.startswith(b"A"):
                    self.timeout_ms = int(data[1:])
                self.fed = time.monotonic()
                self.sock.settimeout(0)
        except (BlockingIOError, TimeoutError):
            pass
        finally:
            self.sock.settimeout(0.02)

    def expired(self) -> bool:
        return self.timeout_ms is not None and (time.monotonic() - self.fed) * 1000 > self.timeout_ms

    def disarm(self) -> None:
        """A hard reset (power cut, the watchdog's own reset) stops it."""
        self.timeout_ms = None

    def close(self) -> None:
        self.sock.close()


def write_description(path: Path, description: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(description))

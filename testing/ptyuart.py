"""A simulated device's UART as a real serial port: a pseudo-terminal whose other end is
bridged to the sim board's TCP stand-in for a UART (boards/sim/simuart.py).

    relay = PtyUart(tcp_port, tmp / "by-id" / "usb-ecoin-sim-ser-1").start()
    # the gateway opens tmp/by-id/usb-ecoin-sim-ser-1 (a link to /dev/pts/N) as a serial port

The gateway then reads the device exactly as it reads a USB adapter: pyserial on a tty,
found through a stable link like those in /dev/serial/by-id. Bytes pass unchanged both ways;
the bridge reconnects to the device's TCP port until ``stop()``.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from pathlib import Path


class PtyUart:
    def __init__(self, tcp_port: int, link: Path) -> None:
        self.tcp_port = tcp_port
        self.link = Path(link)
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing before the gateway sets its own modes
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        self.bytes_up = 0  # device -> gateway
        self.bytes_down = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pty-uart", daemon=True)

    def start(self) -> PtyUart:
        self.link.parent.mkdir(parents=True, exist_ok=True)
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(self.slave_name)
        self._thread.start()
        return self

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1.0)
        except OSError:
            self._stop.wait(0.1)  # the device is not listening yet
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = self._connect()
            if sock is not None:
                with sock:
                    self._pump(sock)

    def _pump(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            ready = select.select([sock.fileno(), self.master], [], [], 0.2)[0]
            try:
                if sock.fileno() in ready:
                    data = sock.recv(4096)
                    if not data:
                        return  # the device closed its end: reconnect
                    os.write(self.master, data)
                    self.bytes_up += len(data)
                if self.master in ready:
                    self._down(sock)
            except ConnectionError:
                return  # the device went away (reset): reconnect

    def _down(self, sock: socket.socket) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:  # no one has the pty open yet (EIO): wait for the gateway
            self._stop.wait(0.05)
            return
        sock.sendall(data)
        self.bytes_down += len(data)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        os.close(self.master)
        if self.link.is_symlink():
            self.link.unlink()

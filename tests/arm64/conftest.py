"""The arm64 root for these tests: built once per machine (slow the first time), ecoin's
wheel installed into this session's copy of its venv."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecoin.testing.arm64 import Arm64Root

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pi(tmp_path_factory: pytest.TempPathFactory) -> Arm64Root:
    return Arm64Root.prepare(CHECKOUT, tmp_path_factory.mktemp("pi"))

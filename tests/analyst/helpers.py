"""Helpers shared by the analyst's end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ecoin.protocol import wire
from ecoin.testing.analyst import AnalystProcess, Requester, Sealed

SERVICES = ["average", "stats", "median", "slow", "sleepy", "crashy"]
ANALYSTS = {"alice": SERVICES, "bob": ["stats"]}  # their bank accounts
BROKER_ACL = {"alice": SERVICES, "bob": ["stats", "average"]}  # the broker lets bob take average
REPO = Path(__file__).resolve().parents[2]


def analyst(
    tmp_path: Path, pki: Path, port: int, bank: Any, services: list[str], /, **kw: Any
) -> AnalystProcess:
    """An analyst process (not started) on broker ``port``; ``plugin_site=`` puts the test
    analysers on its path, ``name=`` names its directory, the rest goes to its table."""
    name = kw.pop("name", "a1")
    plugin_site = kw.pop("plugin_site", None)
    env = {"PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])} if plugin_site else None
    return AnalystProcess(tmp_path / name, pki, port, bank.url, services, env=env, **kw)


def kind(frame: bytes) -> int:
    return frame[1]


def results(gw: Requester, ops: list[Sealed], start: int = 0) -> list[Any]:
    out = []
    for i, op in enumerate(ops):
        frame = gw.reply(b"%d" % (start + i))
        assert frame is not None, f"no reply for operation {start + i}"
        assert kind(frame) == wire.T_RESULT, f"operation {start + i}: {frame.hex()}"
        out.append(op.open(frame))
    return out


def errors(gw: Requester, correlations: list[bytes]) -> list[tuple[bytes, int]]:
    out = []
    for c in correlations:
        frame = gw.reply(c)
        assert frame is not None, f"no reply for {c!r}"
        out.append(wire.decode_error(frame))
    return out

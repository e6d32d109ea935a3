"""Fixtures of the analyst tests: the third-party analyser package (pip-installed), a TLS
broker with the gateway's ACLs, and a requester playing the gateway."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.testing.analyst import Requester, tls_broker
from ecoin.testing.servers import Mosquitto

from .helpers import BROKER_ACL

PLUGIN_PKG = Path(__file__).parent / "plugin_pkg"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where pip installed ``tests/analyst/plugin_pkg`` (``--target``), as a
    third party's package would be: put it on a process's path to get its analysers."""
    base = tmp_path_factory.mktemp("plugin")
    source, site = base / "src", base / "site"
    shutil.copytree(PLUGIN_PKG, source)  # the build writes next to the sources: not in our tree
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"pip could not install the test analysers: {done.stderr[-2000:]}")
    assert (site / "ecoin_test_analysers").is_dir()
    return site


@pytest.fixture
def with_plugins(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test analysers on this process's path (and so on its workers')."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[Mosquitto]:
    # alice runs as two processes in test_service (instances 1 and 2); gw2 watches announcements
    instances = {"alice": ["1", "2"]}
    mq = tls_broker(tmp_path / "mq", pki, BROKER_ACL, ("gw1", "gw2"), instances).start()
    try:
        yield mq
    finally:
        mq.stop()


@pytest.fixture
def gw(broker: Mosquitto, pki: Path) -> Iterator[Requester]:
    r = Requester(broker.port, pki)
    try:
        yield r
    finally:
        r.close()

"""The health/metrics endpoint every service runs: answers, and stays quiet about probers
that hang up (a timed-out health check used to leave a BrokenPipeError traceback)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from ecoin.common import health


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Counter("ecoin_test_things", "things", registry=registry).inc(3)
    srv = health.serve("127.0.0.1", 0, registry, lambda: {"ok": False, "why": "testing"})
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv: health.Server, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{srv.server_address[1]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_and_health_answer(server):
    status, body = get(server, "/metrics")
    assert status == 200 and b"ecoin_test_things_total 3.0" in body
    status, body = get(server, "/healthz")
    assert (status, json.loads(body)) == (503, {"ok": False, "why": "testing"})
    assert get(server, "/nowhere")[0] == 404


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")])
def test_a_prober_that_hung_up_leaves_no_trace(server, exc, capsys, caplog):
    with caplog.at_level(logging.DEBUG):
        try:
            raise exc
        except OSError:
            server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == "" and caplog.records == []


def test_another_error_is_one_structured_line(server, capsys, caplog):
    try:
        raise ValueError("boom")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1))
    assert capsys.readouterr().err == ""
    assert [(r.getMessage(), r.levelname) for r in caplog.records] == [("health_request_failed", "WARNING")]


def test_a_port_in_use_is_named() -> None:
    taken = health.serve("127.0.0.1", 0, CollectorRegistry())
    port = taken.server_address[1]
    try:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            health.serve("127.0.0.1", port, CollectorRegistry())
    finally:
        taken.shutdown()
        taken.server_close()

"""QoS 1 redelivery: the analyst's broker connection breaks with operations in flight; the
broker re-sends them on the same session, and each is analysed and paid once."""

from __future__ import annotations

from pathlib import Path

from ecoin.testing.analyst import seal, withdraw
from ecoin.testing.relay import Relay
from ecoin.testing.servers import wait_until

from .helpers import ANALYSTS, analyst, results


def test_operations_redelivered_after_a_broken_connection_are_answered_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, pki: Path, broker, gw, bank_server, plugin_site: Path
) -> None:
    n = 24
    ops = seal(withdraw(bank_server, n, ANALYSTS), "slow")
    proxy = Relay(("127.0.0.1", broker.port))  # the network between the analyst and its broker
    a = analyst(
        tmp_path,
        pki,
        proxy.port,
        bank_server,
        ["slow"],
        plugin_site=plugin_site,
        broker={"receive_maximum": 32},
        limits={"workers": 2},
        options={"slow": {"delay": 0.2}},
    )
    try:
        with a:
            gw.send_all("slow", ops)
            assert gw.wait(2)
            proxy.cut()  # mid-load: most operations are taken and not yet acknowledged
            assert gw.wait(n, timeout=60)
            ok = 'ecoin_analyst_operations_total{outcome="ok",service="slow"}'
            # the reply is published before the analyst counts it: wait for the count
            wait_until(lambda: a.metrics().get(ok, 0) >= n, timeout=10, what=f"{n} operations counted")
            m = a.metrics()
            events = a.events()
    finally:
        proxy.close()
    assert {r["result"] for r in results(gw, ops)} == {21.625}
    assert m[ok] == n  # each analysed once
    assert m["ecoin_analyst_duplicates_total"] >= 1  # the broker did re-send some
    connects = [e for e in events if e["event"] == "broker_connected"]
    assert len(connects) >= 2 and connects[-1]["session_present"] is True
    with bank_server.client("analyst", "alice") as alice:
        assert alice.balance() == n

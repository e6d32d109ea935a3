"""QoS 1 redelivery: the analyst's broker connection breaks with operations in flight; the
broker re-sends them on the same session, and each is analysed and paid once."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from ecoin.testing.analyst import seal, withdraw
from ecoin.testing.servers import wait_until

from .helpers import ANALYSTS, analyst, results


class Proxy:
    """A TCP relay in front of the broker that can cut every connection through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()
        self.cut()


def test_operations_redelivered_after_a_broken_connection_are_answered_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, pki: Path, broker, gw, bank_server, plugin_site: Path
) -> None:
    n = 24
    ops = seal(withdraw(bank_server, n, ANALYSTS), "slow")
    proxy = Proxy(broker.port)
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

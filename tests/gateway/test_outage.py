"""Store-and-forward across a real outage: the upstream broker is stopped during traffic
until the queue has overflowed (about 15 s), and restarted. Every queued operation is
delivered afterwards, none twice to an analyst, the byte cap holds and what it dropped were
the oldest operations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import Device, EchoAnalyst, config, operation, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto, free_port

OUTAGE_S = 30.0  # the longest the outage may need (the devices wait this long and more)
SPACING_S = 0.02  # one operation every 20 ms, round robin over the devices
FRAME = len(operation())
CAP_OPS = 600  # the queue's byte cap, in operations (12 s of traffic)
DROPS = 100  # the outage lasts until the full queue has dropped this many


def test_upstream_outage(tmp_path: Path) -> None:
    up_port = free_port()
    edge = Mosquitto.plain(tmp_path / "edge").start()
    upstream = Mosquitto.plain(tmp_path / "up1", up_port).start()
    analyst = EchoAnalyst(up_port)
    analyst.client.reconnect_delay_set(0.1, 0.5)
    analyst.start()
    cfg = config(
        tmp_path,
        edge.port,
        up_port,
        op_timeout_s=OUTAGE_S + 10,  # the devices wait out the outage: nothing queued is stale
        queue={"max_bytes": CAP_OPS * FRAME, "replay_rate": 300.0, "replay_burst": 20},
    )
    gw = Gateway(cfg).start()
    devices = [Device(edge.port, f"dev{i}").start() for i in range(4)]
    sent: list[tuple[float, bytes, Device]] = []
    stop_sending = threading.Event()
    max_bytes = [0]

    def load() -> None:
        i = 0
        while not stop_sending.is_set():
            dev = devices[i % len(devices)]
            op = operation()
            sent.append((time.monotonic(), op[2:18], dev))
            dev.send(op)
            i += 1
            time.sleep(SPACING_S)

    def watch() -> None:
        while not stop_sending.is_set() or gw.queue.depth:
            max_bytes[0] = max(max_bytes[0], gw.queue.bytes)
            time.sleep(0.005)

    threads = [threading.Thread(target=load), threading.Thread(target=watch)]
    try:
        wait_until(lambda: gw.edge.link.subscribed and gw.directory.is_live("echo"), what="gateway up")
        for t in threads:
            t.start()
        wait_until(lambda: _answered(sent) >= 100, what="traffic flowing before the outage")
        upstream.stop()
        down_at = time.monotonic()
        wait_until(lambda: not gw.upstream.ready, what="upstream seen down")
        dropped = 'ecoin_gateway_errors_total{kind="dropped"}'
        wait_until(lambda: metric(gw, dropped) >= DROPS, timeout=OUTAGE_S, what="the full queue dropping")
        assert metric(gw, 'ecoin_gateway_link_up{link="upstream"}') == 0
        assert gw.status()["upstream"] is False and gw.status()["queue_depth"] > 0
        up_at = time.monotonic()
        upstream = Mosquitto.plain(tmp_path / "up2", up_port).start()
        # traffic goes on while the queue is replayed, until it is empty
        wait_until(lambda: gw.upstream.ready and not gw.queue.depth, timeout=60, what="queue replayed")
        stop_sending.set()
        threads[0].join()
        wait_until(lambda: all(op_id in d.answers for _, op_id, d in sent), timeout=60, what="every answer")
        threads[1].join()

        answers = {op_id: d.answers[op_id] for _, op_id, d in sent}
        assert all(len(a) == 1 for a in answers.values()), "one answer per operation"
        kinds = {op_id: _kind(a[0]) for op_id, a in answers.items()}
        # None twice to an analyst, and every RESULT came from exactly one delivery.
        assert max(analyst.received.values()) == 1
        results = {k for k, v in kinds.items() if v == "result"}
        assert results <= set(analyst.received)
        # Received but unanswered: only those whose reply died with the broker (TIMEOUT).
        assert all(kinds[k] == "timeout" for k in set(analyst.received) - results)

        # Sent while the broker was surely down: queued, so delivered or dropped, never lost.
        queued = [op_id for at, op_id, _ in sent if down_at + 0.5 < at < up_at]
        assert len(queued) > CAP_OPS
        queued_kinds = [kinds[op_id] for op_id in queued]
        assert set(queued_kinds) <= {"result", "dropped"}
        assert queued_kinds.count("result") >= CAP_OPS * 0.9
        # The cap held, and it dropped the oldest first.
        assert max_bytes[0] <= CAP_OPS * FRAME
        for dev in devices:  # per device: one connection keeps its order, so this is exact
            mine = [kinds[op_id] for at, op_id, d in sent if d is dev and down_at + 0.5 < at < up_at]
            assert "dropped" not in mine[mine.index("result") :]
        assert metric(gw, 'ecoin_gateway_reconnects_total{link="upstream"}') == 2
        assert metric(gw, 'ecoin_gateway_link_up{link="upstream"}') == 1
        # Only the few operations in flight when the broker died can have timed out.
        assert list(kinds.values()).count("timeout") <= cfg.limits.window
        assert metric(gw, 'ecoin_gateway_errors_total{kind="dropped"}') == list(kinds.values()).count(
            "dropped"
        )
    finally:
        stop_sending.set()
        for t in threads:
            if t.is_alive():
                t.join()
        for d in devices:
            d.stop()
        gw.stop()
        analyst.stop()
        upstream.stop()
        edge.stop()


def _answered(sent: list[tuple[float, bytes, Device]]) -> int:
    return sum(op_id in d.answers for _, op_id, d in list(sent))


def _kind(frame: bytes) -> str:
    ftype, _ = wire.frame_type(frame)
    if ftype == wire.T_RESULT:
        return "result"
    code = wire.decode_error(frame)[1]
    return {wire.E_DROPPED: "dropped", wire.E_TIMEOUT: "timeout"}.get(code, f"error{code}")

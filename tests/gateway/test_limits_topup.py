"""Input limits (rate, size, shape, repeats) and the top-up relay to a bank over mTLS.

The bank here is a stand-in HTTPS server with the project PKI (client certificate
required, role checked) that answers a TOPUP_RESPONSE-shaped frame: the gateway relays
frames it cannot read, so their content does not matter to it."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ecoin.common import tls
from ecoin.gateway.service import Gateway
from ecoin.protocol import wire
from ecoin.testing.gateway import Device, EchoAnalyst, config, operation, query, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto


def topup_request(device: str, op_id: bytes | None = None) -> bytes:
    return bytes(wire.encode_topup_request(op_id or os.urandom(16), device, 5, 2))


class StandInBank:
    def __init__(self, pki: Path) -> None:
        self.mode = "ok"
        self.callers: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.callers.append(tls.peer_identity(self.connection))  # type: ignore[arg-type]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                op_id, _, counter, _, _ = wire.decode_topup_request(base64.b64decode(body["frame"]))
                if outer.mode == "error":
                    return self._send(503, {"error": {"code": "unavailable", "message": "db down"}})
                if outer.mode == "wrong":
                    op_id = os.urandom(16)  # an answer for another request
                frame = wire.encode_topup_response(op_id, counter, os.urandom(16), os.urandom(80))
                self._send(200, {"frame": base64.b64encode(frame).decode()})

            def _send(self, code: int, obj: object) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = tls.server_context(pki / "bank" / "bank.crt", pki / "bank" / "bank.key", pki / "ca.crt")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bank(pki: Path) -> Iterator[StandInBank]:
    b = StandInBank(pki)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def limited(tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst, pki: Path, bank: StandInBank):  # type: ignore[no-untyped-def]
    cfg = config(
        tmp_path,
        mosquitto.port,
        limits={"rate_per_s": 0.5, "burst": 5, "frame_max": 1000},
        bank={
            "url": bank.url,
            "ca": str(pki / "ca.crt"),
            "cert": str(pki / "gateway" / "gw1.crt"),
            "key": str(pki / "gateway" / "gw1.key"),
        },
    )
    gw = Gateway(cfg).start()
    try:
        wait_until(
            lambda: gw.edge.link.subscribed and gw.directory.synced_now and gw.directory.is_live("echo")
        )
        yield gw
    finally:
        gw.stop()


def test_rate_limit_per_device(limited: Gateway, mosquitto: Mosquitto) -> None:
    a, b = Device(mosquitto.port, "rl-a").start(), Device(mosquitto.port, "rl-b").start()
    try:
        answers = [a.ask(query("echo")) for _ in range(8)]
        assert [wire.frame_type(x)[0] for x in answers[:5]] == [wire.T_STATUS] * 5
        assert [wire.decode_error(x)[1] for x in answers[5:]] == [wire.E_REJECTED] * 3
        assert wire.frame_type(b.ask(query("echo")))[0] == wire.T_STATUS  # b has its own bucket
        assert metric(limited, 'ecoin_gateway_errors_total{kind="rejected"}') == 3
    finally:
        a.stop()
        b.stop()


def test_oversized_malformed_and_repeated_frames(
    limited: Gateway, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    dev = Device(mosquitto.port, "mf").start()
    try:
        big = operation(size=2048)  # over this gateway's frame_max of 1000
        assert wire.decode_error(dev.ask(big)) == (big[2:18], wire.E_REJECTED)
        bad = bytearray(operation())
        bad[27] = 200  # service name length runs past the frame
        assert wire.decode_error(dev.ask(bytes(bad))) == (bytes(bad[2:18]), wire.E_REJECTED)
        dev.send(b"\x09no prefix")  # shorter than a prefix: nothing to answer, dropped and counted
        op = operation()
        dev.send(op)
        dev.send(op)  # a repeat (as a QoS 1 redelivery would be) goes nowhere
        assert wire.frame_type(dev.wait(op[2:18]))[0] == wire.T_RESULT
        wait_until(lambda: metric(limited, "ecoin_gateway_duplicates_total") == 1, what="repeat counted")
        assert analyst.received[op[2:18]] == 1
        assert len(dev.answers[op[2:18]]) == 1
        assert metric(limited, 'ecoin_gateway_malformed_total{source="mqtt"}') == 3
    finally:
        dev.stop()


def test_topup_relay_over_mtls(limited: Gateway, mosquitto: Mosquitto, bank: StandInBank) -> None:
    dev = Device(mosquitto.port, "tp").start()
    try:
        req = topup_request("tp")
        answer = dev.ask(req)
        assert wire.decode_topup_response(answer)[:2] == (req[2:18], 5)
        assert bank.callers == [("gw1", "gateway")]  # the gateway's own certificate
        # A top-up for another device is refused before the bank is asked.
        other = topup_request("someone-else")
        assert wire.decode_error(dev.ask(other)) == (other[2:18], wire.E_REJECTED)
        # Any bank failure is the same generic FAILED.
        for mode in ("error", "wrong"):
            bank.mode = mode
            req = topup_request("tp")
            assert wire.decode_error(dev.ask(req)) == (req[2:18], wire.E_FAILED)
        assert len(bank.callers) == 3
    finally:
        dev.stop()


def test_topup_without_a_bank_fails_cleanly(
    tmp_path: Path, mosquitto: Mosquitto, analyst: EchoAnalyst
) -> None:
    gw = Gateway(config(tmp_path, mosquitto.port)).start()
    dev = Device(mosquitto.port, "nb").start()
    try:
        wait_until(lambda: gw.edge.link.subscribed)
        req = topup_request("nb")
        assert wire.decode_error(dev.ask(req)) == (req[2:18], wire.E_FAILED)
    finally:
        dev.stop()
        gw.stop()

"""A top-up whose answer is lost is recovered by its identical resend (PROTOCOL 4.5), through
the real gateway and the real bank: the resend is relayed again (also after a FAILED), the
bank answers it with the same coins, and the owner is charged once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoin.common import crypto
from ecoin.gateway.service import Gateway
from ecoin.protocol import session, wire
from ecoin.testing.bank import BankProcess
from ecoin.testing.gateway import Device, config, wait_until
from ecoin.testing.metrics import metric
from ecoin.testing.servers import Mosquitto

DEVICE_KEY = bytes(range(7, 39))
FUNDS = 100


@pytest.fixture
def bank(tmp_path: Path, pki: Path) -> Iterator[BankProcess]:
    b = BankProcess(tmp_path / "bank", pki, workers=1).start()
    try:
        b.admin.create_account("olive", "owner")
        b.admin.fund("olive", FUNDS, request_id="fund-1")
        with b.client("owner", "olive") as olive:
            olive.register_device("tp1", DEVICE_KEY)
        yield b
    finally:
        b.stop()


@pytest.fixture
def relay(tmp_path: Path, mosquitto: Mosquitto, pki: Path, bank: BankProcess) -> Iterator[Gateway]:
    gw1 = pki / "gateway" / "gw1"
    bank_table = {"url": bank.url, "ca": str(pki / "ca.crt"), "cert": f"{gw1}.crt", "key": f"{gw1}.key"}
    gw = Gateway(config(tmp_path, mosquitto.port, bank={**bank_table, "timeout_s": 3.0})).start()
    try:
        wait_until(lambda: gw.edge.link.subscribed, what="gateway up")
        yield gw
    finally:
        gw.stop()


def _balance(bank: BankProcess) -> int:
    with bank.client("owner", "olive") as olive:
        return olive.balance()


@pytest.mark.slow
def test_the_resend_of_a_lost_answer_gets_the_same_coins(
    relay: Gateway, mosquitto: Mosquitto, bank: BankProcess
) -> None:
    op_id, frame = session.seal_topup_request(crypto, DEVICE_KEY, "tp1", 1, 4)
    dev = Device(mosquitto.port, "tp1").start()
    try:
        first = dev.ask(bytes(frame))  # the device never sees this one: "lost"
        dev.answers.clear()
        again = dev.ask(bytes(frame))
    finally:
        dev.stop()
    coins = session.open_topup_response(crypto, DEVICE_KEY, again, op_id, 1)[1]
    assert coins == session.open_topup_response(crypto, DEVICE_KEY, first, op_id, 1)[1]
    assert len(coins) == 4 * wire.COIN_LEN
    assert _balance(bank) == FUNDS - 4  # charged once
    assert metric(relay, 'ecoin_gateway_ops_out_total{kind="topup"}') == 2


@pytest.mark.slow
def test_the_resend_after_a_failed_relay_gets_the_coins(
    relay: Gateway, mosquitto: Mosquitto, bank: BankProcess
) -> None:
    op_id, frame = session.seal_topup_request(crypto, DEVICE_KEY, "tp1", 1, 3)
    dev = Device(mosquitto.port, "tp1").start()
    try:
        bank.kill()
        assert wire.decode_error(dev.ask(bytes(frame))) == (op_id, wire.E_FAILED)
        bank.start()
        dev.answers.clear()
        answer = dev.ask(bytes(frame))
    finally:
        dev.stop()
    assert len(session.open_topup_response(crypto, DEVICE_KEY, answer, op_id, 1)[1]) == 3 * wire.COIN_LEN
    assert _balance(bank) == FUNDS - 3

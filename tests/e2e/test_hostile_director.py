"""The hostile director, end to end: a real device (the firmware on MicroPython), real
analysts, a real bank and broker, and a director that tampers, replays, reorders, splices,
reroutes and drops. The device accepts only genuine results (also after a forged one), no
coin is spent twice, a tampered, rerouted or spliced operation spends nothing, lost coins are
refunded by a claim, and the bank's audit passes. And a device that cheats (one coin, one
op_id, three different readings from three device topics) buys one analysis."""

from __future__ import annotations

import json
import os
import queue
import re
import threading

import paho.mqtt.client as mqtt
import pytest

from ecoin.common import crypto
from ecoin.protocol import session, wire
from ecoin.testing.hostile import HostileDirector
from ecoin.tools.provisioning.flash import read_in_doubt
from ecoin.tools.provisioning.refund import claim_refunds

from .conftest import QUICK

PLAN = {
    1: "tamper_op",
    2: "tamper_result",
    3: "replay_result",
    4: "hold",
    5: "splice",
    6: "reroute",
    7: "drop",
    8: "honest_and_replay_first",
    9: "reorder",
    10: "tamper_tag",
    11: "forge_first",
}
OPS = 12
GENUINE = {0, 8, 9, 11}  # the only results the device may accept
REDEEMED = {0, 2, 3, 8, 9, 11}  # coins an analyst really redeemed (then the director struck)
UNSPENT = {1, 4, 5, 6, 7, 10}  # tampered, held, spliced, rerouted, dropped: the bank spent nothing


@pytest.fixture
def system(analysts):
    """alice sells average, bob sells stats."""
    analysts("alice", "average")
    analysts("bob", "stats")


def test_a_hostile_director_cannot_forge_replay_splice_reroute_or_double_spend(
    tmp_path, mosquitto, bank, system, directed
):
    owner = bank.client("owner", "olive")
    director = HostileDirector(mosquitto.port, PLAN)
    device = directed("dev-h1", 20, {**QUICK, "max_ops": OPS}, director)
    flash = device.flash_dir
    console = device.output()
    assert len(director.ops) == OPS, director.log

    # The device accepted exactly the genuine results, and refused everything forged.
    accepted = set(re.findall(r"collector: op (\w{8}) result ", console))
    failed = set(re.findall(r"collector: op (\w{8}) failed ", console))
    short = {op.index: op.op_id[:4].hex() for op in director.ops}
    assert accepted == {short[i] for i in GENUINE}, console
    assert failed == {short[i] for i in set(range(OPS)) - GENUINE}, console

    # Every coin was spent at most once: the analyst was paid once per coin it redeemed,
    # the replayed operation earned nothing more, the rerouted one nothing at all.
    balances = {a["id"]: a["balance"] for a in bank.admin.accounts()}
    assert balances["alice"] == len(REDEEMED)
    assert balances["bob"] == 0

    # The coins in doubt are claimed: those never redeemed come back to the owner, the
    # others are shown as redeemed by the analyst.
    report = claim_refunds(owner, "dev-h1", flash_dir=flash)
    states = {c.op_id[:8]: (c.state, c.by) for c in report.claims}
    assert states == {
        **{short[i]: ("redeemed", "alice") for i in REDEEMED - GENUINE},
        **{short[i]: ("refunded", None) for i in UNSPENT},
    }
    assert balances["olive"] + len(UNSPENT) == owner.balance() == 100 - 20 + len(UNSPENT)
    # The claim marked those coins settled on the device: claiming again finds nothing there,
    # and the same coins sent to the bank once more pay nothing twice.
    assert report.settled.startswith("marked"), report.settled
    assert claim_refunds(owner, "dev-h1", flash_dir=flash).claims == []
    doubts = read_in_doubt(flash)
    again = owner.claim("dev-h1", [d.coin for d in doubts])
    assert {d.op_id[:4].hex(): a["state"] for d, a in zip(doubts, again, strict=True)} == {
        **{short[i]: "redeemed" for i in REDEEMED - GENUINE},
        **{short[i]: "already_refunded" for i in UNSPENT},
    }
    assert owner.balance() == 100 - 20 + len(UNSPENT)

    audit = bank.cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_one_coin_sent_three_times_buys_one_analysis(mosquitto, bank, system):
    """A device that cheats: one coin, one op_id, three different readings (each with a valid
    tag: the device holds the keys), sent from three device topics. One analysis comes back,
    the other two get FAILED, the analyst is paid once."""
    owner = bank.client("owner", "olive")
    owner.register_device("cheat", os.urandom(32))
    w = owner.withdraw("cheat", 1, request_id="cheat-1")
    op_id, replies = os.urandom(16), queue.Queue()
    director = HostileDirector(mosquitto.port, {}).start()
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cheat", protocol=mqtt.MQTTv311)
    subscribed = threading.Event()
    device.on_message = lambda _c, _u, msg: replies.put(bytes(msg.payload))
    device.on_subscribe = lambda *_: subscribed.set()
    device.connect("127.0.0.1", mosquitto.port)
    device.loop_start()
    try:
        topics = [f"ecoin/dev/cheat-{i}" for i in range(3)]
        device.subscribe([(f"{t}/down", 1) for t in topics])
        assert subscribed.wait(10)
        keys = None
        for i, t in enumerate(topics):
            readings = json.dumps({"sensor": "t", "unit": "C", "start": 0, "interval": 1, "values": [i, 2]})
            _, k_enc, k_mac, frame = session.seal_operation(
                crypto, w.public_key, w.kid, w.coins[0], "average", readings.encode(), op_id=op_id
            )
            keys = (k_enc, k_mac)
            device.publish(f"{t}/up", bytes(frame), qos=1).wait_for_publish(5)
        got = [replies.get(timeout=30) for _ in range(3)]
    finally:
        device.loop_stop()
        device.disconnect()
        director.stop()
    assert len(director.ops) == 3
    kinds = sorted(f[1] for f in got)
    assert kinds == [wire.T_RESULT, wire.T_ERROR, wire.T_ERROR]
    result = next(f for f in got if f[1] == wire.T_RESULT)
    assert json.loads(session.open_result(crypto, result, op_id, *keys))["service"] == "average"
    assert {wire.decode_error(f)[1] for f in got if f[1] == wire.T_ERROR} == {wire.E_FAILED}
    assert {a["id"]: a["balance"] for a in bank.admin.accounts()}["alice"] == 1
    audit = bank.cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

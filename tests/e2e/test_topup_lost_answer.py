"""A top-up whose answer is lost on the way back costs the owner nothing extra: the device
repeats the identical request and the bank answers it with the same coins."""

from __future__ import annotations

from ecoin.testing.hostile import HostileDirector


def test_a_lost_top_up_answer_is_repeated_not_paid_twice(mosquitto, bank, directed):
    owner = bank.client("owner", "olive")
    bank.admin.create_account("alice", "analyst", ["average"])  # the service the device buys is sold
    config = {
        "low_coins": 10,
        "topup_count": 20,
        "topup_retry": 0.5,
        "op_timeout": 2.0,
        "batch_seconds": 3600.0,
    }
    with bank.client("gateway", "gw1") as gateway_bank:
        director = HostileDirector(mosquitto.port, {}, bank=gateway_bank, drop_topup_answers=2)
        device = directed("dev-t1", 5, config, director, until="topup: 20 coins added", timeout=60)
    # Three identical requests reached the bank; it minted and charged once.
    assert len(director.topups) == 3 and len(set(director.topups)) == 1, director.log
    assert owner.balance() == 100 - 5 - 20
    state = device.state()
    assert (state.left, state.counter) == (5 + 20, 1)
    audit = bank.cli("audit", check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

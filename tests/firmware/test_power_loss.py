"""Power loss: the device process is killed (SIGKILL) at 200 random moments while it operates
and restarted each time. No coin may ever be sent twice, and every coin must be accounted
for: unused, spent (answered with a verified result) or in doubt."""

from __future__ import annotations

import random
import time

from ecoin.sim import SimDevice
from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto
from ecoin.tools.provisioning.flash import read_coins

from .conftest import MakeDevice, faithful

KILLS = 200
R_RESTART = 13
BOOT = "ecoin collector starting"  # main.py's first line, before anything is loaded


def test_sigkill_at_200_random_moments(broker: Mosquitto, responder: Responder, make_device: MakeDevice):
    # The faithful board (clock at 2000-01-01 until NTP, watchdog running, sensor timeouts),
    # with the station joining at once: the kills are about the coin store, not WiFi.
    dev: SimDevice = make_device(
        broker.port,
        coins=2000,
        batch_max=4,
        sample_interval=0.001,
        batch_seconds=0.002,
        op_timeout=2.0,
        hardware=faithful(assoc_s=0.0),
    )
    responder.delay = 0.02  # an analysis takes a while: more cuts land while a coin is out
    rng = random.Random(20261122)
    in_flight = 0  # kills that cut an operation between take and answer
    for n in range(KILLS):
        dev.start()
        # The moment is random from the boot's first line on (the process has started: on a
        # loaded machine that alone can take longer than the whole window), so every cut
        # lands in the firmware: boot takes about 40 ms, an operation about 10 ms.
        assert dev.wait_for(BOOT, timeout=30, count=n + 1), dev.output()[-2000:]
        time.sleep(rng.uniform(0.0, 0.3))
        dev.kill()
        state = dev.state()  # the flash is consistent after every cut
        in_flight += state.pending_op is not None
        assert state.next <= state.count
    connected = dev.output().count("mqtt: connected")
    dev.start()  # a last, clean boot settles the operation cut by the last kill
    assert dev.wait_for("mqtt: connected", timeout=20, count=connected + 1)
    dev.stop()

    out = dev.output()
    assert out.count(BOOT) == KILLS + 1
    assert "Traceback" not in out and "cannot start" not in out and "memory" not in out

    # No coin ever sent twice: one operation per coin, whatever the broker redelivered.
    assert responder.coins_sent_twice() == {}
    assert responder.errors == []

    # Every coin accounted for.
    state = dev.state()
    coins = read_coins(dev.flash_dir, state)
    assert coins == dev.coins  # type: ignore[attr-defined]
    used, unused = coins[: state.next], coins[state.next :]
    doubts = dev.in_doubt()
    doubt_coins = [d.coin for d in doubts]
    if state.pending_op:  # stopped inside an operation: in doubt from the next boot on
        assert state.pending_coin not in doubt_coins
        doubt_coins.append(state.pending_coin)
    assert len(set(doubt_coins)) == len(doubt_coins)  # each in doubt once
    assert len({d.op_id for d in doubts}) == len(doubts)
    assert state.pending_op not in {d.op_id for d in doubts}
    assert set(doubt_coins) <= set(used)
    seen = responder.by_coin
    assert set(seen) <= set(used)  # nothing unused ever left the device
    assert not set(seen) & set(unused)
    spent = set(used) - set(doubt_coins)
    assert spent <= set(seen)  # spent means the responder got it and answered
    for d in doubts:  # an in-doubt record names the operation that carried its coin
        if d.coin in seen:
            assert seen[d.coin] == [d.op_id]
    assert len(spent) + len(doubt_coins) == state.next

    # The kills did land inside operations, and those coins went in doubt at the next boot;
    # those whose answer came after it (the broker kept it) were settled by it, and a boot
    # after that dropped their records (PROTOCOL 4.2, a late RESULT).
    restarts = sum(d.reason == R_RESTART for d in doubts)
    late = out.count("late result")
    print(f"{in_flight} of {KILLS} kills in flight: {len(spent)} spent, {len(doubts)} in doubt, {late} late")
    assert in_flight >= 20 and 1 <= restarts + late and restarts <= in_flight
    assert len(spent) > KILLS  # operations kept completing between the kills

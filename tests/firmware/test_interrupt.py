"""Ctrl-C (SIGINT: KeyboardInterrupt) at random moments of a running device ends it
cleanly: the firmware hands the watchdog to the maintenance feeder and prints its summary,
never a traceback. The unix port raises it from its signal handler in the middle of any C
code (a garbage collection: the heap stays locked); SimDevice.stop delivers it as a board
does, in a wait (ecoin.sim.ctrlc)."""

from __future__ import annotations

import random
import time

from ecoin.testing.responder import Responder
from ecoin.testing.servers import Mosquitto

from .conftest import MakeDevice, faithful

STOPS = 60


def test_ctrl_c_at_random_moments_ends_cleanly(
    broker: Mosquitto, responder: Responder, make_device: MakeDevice
):
    dev = make_device(
        broker.port,
        coins=5000,
        batch_max=4,
        sample_interval=0.001,
        batch_seconds=0.002,
        hardware=faithful(assoc_s=0.0),
    )
    rng = random.Random(20261202)
    for n in range(STOPS):
        dev.start()
        assert dev.wait_for("mqtt: connected", timeout=30, count=n + 1), dev.output()[-2000:]
        time.sleep(rng.uniform(0.0, 0.5))  # in boot, in an operation, in a wait
        dev.stop()
        assert dev.output().count("collector done") == n + 1, dev.output()[-2000:]
    out = dev.output()
    assert "Traceback" not in out and "heap is locked" not in out and "memory" not in out, out[-3000:]

"""Issue 6's endurance check: one device, the real firmware under MicroPython with a 72 KiB
heap, 1,000 operations against the real broker, gateway, analysts and bank, topping up its
coins on the way."""

from __future__ import annotations

from ecoin.sim.demo import Demo


def test_a_72k_device_completes_1000_operations_against_the_real_system(tmp_path):
    demo = Demo(
        tmp_path, devices=1, ops=1000, heap="72K", runtime="micropython", quiet=True, batch_seconds=0.02
    )
    result = demo.run()
    console = demo.fleet[0].sim.output()
    assert "MemoryError" not in console and "out of memory" not in console, console[-3000:]
    assert (result["ops_ok"], result["ops_failed"]) == (1000, 0), console[-3000:]
    # Below 100 coins the device topped up through the gateway and the bank, 20 coins a time.
    topups = console.count("topup: 20 coins added")
    assert topups >= 1 and "topup: failed" not in console, console[-3000:]
    assert result["coins_left"] == 20 * topups
    assert result["analyst_credits"] == 1000
    assert result["audit_ok"]

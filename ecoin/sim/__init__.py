"""The collector simulator: the unchanged firmware in MicroPython unix-port processes.

- ``deploy``: writes a device's flash directory (firmware, config, coins, secrets).
- ``flash``: reads a device's coin store (cursor, pending coin, in-doubt records) from CPython.
- ``device``: ``SimDevice``, one simulated device process (start, stop, kill, state).
- ``cli``: the ``ecoin-sim`` command.
"""

from ecoin.sim.deploy import DeployError, deploy_device, install_firmware
from ecoin.sim.device import SimDevice
from ecoin.sim.flash import Doubt, FlashState, read_in_doubt, read_state

__all__ = [
    "DeployError",
    "Doubt",
    "FlashState",
    "SimDevice",
    "deploy_device",
    "install_firmware",
    "read_in_doubt",
    "read_state",
]

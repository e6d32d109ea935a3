"""The collector simulator: the unchanged firmware in MicroPython unix-port processes.

- ``device``: ``SimDevice``, one simulated device process (start, stop, kill, state).
- ``replboard``: a simulated board behind a real pseudo-terminal, for mpremote.
- ``demo``: the whole system on one machine (``make demo``).
- ``cli``: the ``ecoin-sim`` command.

A device's flash directory is written by provisioning (ecoin.tools.provisioning.deploy).
"""

from ecoin.sim.device import SimDevice

__all__ = ["SimDevice"]

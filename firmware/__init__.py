"""The collector firmware (MicroPython). This marker lets host tools find the files with
importlib.resources; it is never deployed (boards/<board>/manifest lists what is)."""

"""Board support files (MicroPython), one folder per board with its manifest. This marker
lets host tools find them with importlib.resources; it is never deployed."""

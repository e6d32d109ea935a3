"""Runs the firmware on CPython where the MicroPython binary is absent (e.g. arm64).

This directory is put first on the device's module path: ``cryptolib`` (on ``cryptography``)
and ``micropython`` (``const`` and friends); ``run.py`` adds the ``time.ticks_*`` functions,
changes into the flash directory and runs its ``main.py``. It is a stand-in, not an
emulator: heap limits and .mpy files do not apply.
"""

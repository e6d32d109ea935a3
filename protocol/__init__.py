"""The protocol shared by device and services.

Every module in this package runs unchanged on MicroPython and CPython; the firmware
deployment copies them flat onto the board. ``wire`` is the byte layout, ``session`` the
recipes (key schedule, seal and open), ``ucrypto`` the device's cryptography backend.
"""

"""Constants and small helpers shared by the bank's tests."""

from __future__ import annotations

DEVICE_KEY = bytes(range(32))  # olive's dev1
OTHER_KEY = bytes(range(32, 64))  # oscar's dev2

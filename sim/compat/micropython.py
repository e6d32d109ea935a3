"""The few ``micropython`` module functions the firmware may call, on CPython."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def const(x: T) -> T:
    return x


def mem_info(*args: object) -> None:
    print("mem: (CPython compatibility layer: no heap figures)")

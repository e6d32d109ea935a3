"""MicroPython's ``cryptolib.aes`` on the ``cryptography`` package (ECB = 1, CBC = 2).

Like the original, one object either encrypts or decrypts, chaining across calls."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

MODE_ECB = 1
MODE_CBC = 2


class aes:  # noqa: N801 - MicroPython's name
    def __init__(self, key: bytes, mode: int, iv: bytes | None = None) -> None:
        if mode not in (MODE_ECB, MODE_CBC):
            raise ValueError("mode")
        algo = algorithms.AES(bytes(key))
        self._cipher: Cipher[Any] = (
            Cipher(algo, modes.CBC(bytes(iv or bytes(16)))) if mode == MODE_CBC else Cipher(algo, modes.ECB())  # noqa: S305 - parity with the device's API
        )
        self._ctx: CipherContext | None = None
        self._encrypting = False

    def _run(self, encrypt: bool, data: bytes, out: bytearray | memoryview | None) -> bytes | None:
        if len(data) % 16:
            raise ValueError("data must be a multiple of 16 bytes")
        if self._ctx is None:
            self._ctx = self._cipher.encryptor() if encrypt else self._cipher.decryptor()
            self._encrypting = encrypt
        elif self._encrypting != encrypt:
            raise OSError("an aes object either encrypts or decrypts")
        result = self._ctx.update(bytes(data))
        if out is None:
            return result
        out[: len(result)] = result
        return None

    def encrypt(self, data: bytes, out: bytearray | memoryview | None = None) -> bytes | None:
        return self._run(True, data, out)

    def decrypt(self, data: bytes, out: bytearray | memoryview | None = None) -> bytes | None:
        return self._run(False, data, out)

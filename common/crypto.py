"""CPython cryptography backend, on the ``cryptography`` package.

It offers the same functions as the device backend (``protocol/ucrypto.py``), so the
recipes in ``ecoin.protocol.session`` run on either; the bank also needs RSA decryption,
which lives in ``ecoin.bank.keys``.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Bytes = bytes | bytearray | memoryview


def random(n: int) -> bytes:
    return os.urandom(n)


def sha256(data: Bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: Bytes, *parts: Bytes) -> bytes:
    mac = _hmac.new(bytes(key), digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def hkdf_sha256(ikm: Bytes, salt: Bytes, info: Bytes, length: int) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=bytes(salt) or None, info=bytes(info))
    return kdf.derive(bytes(ikm))


def equal(a: Bytes, b: Bytes) -> bool:
    return _hmac.compare_digest(bytes(a), bytes(b))


def aes_cbc_encrypt(key: Bytes, iv: Bytes, plaintext: Bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(bytes(plaintext)) + padder.finalize()
    enc = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).encryptor()
    return enc.update(padded) + enc.finalize()


def aes_cbc_decrypt(key: Bytes, iv: Bytes, ciphertext: Bytes) -> bytes:
    if not ciphertext or len(ciphertext) % 16:
        raise ValueError("ciphertext length is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(bytes(key)), modes.CBC(bytes(iv))).decryptor()
    padded = dec.update(bytes(ciphertext)) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def oaep(label: bytes) -> OAEP:
    return OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def oaep_encrypt(public: tuple[int, int], message: Bytes, label: bytes, seed: Bytes | None = None) -> bytes:
    """RSA-OAEP-SHA256. ``seed`` is accepted for interface parity; only the device backend
    uses it (test vectors); here the library always draws a fresh one."""
    n, e = public
    key = rsa.RSAPublicNumbers(e, n).public_key()
    return key.encrypt(bytes(message), oaep(label))

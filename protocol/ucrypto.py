# Device cryptography backend: the stock MicroPython firmware only (cryptolib, hashlib, os).
#
# The same function names as common/crypto.py (the CPython backend on the `cryptography`
# package); session.py is written against either. Only what a device needs is here: it
# encrypts to the bank's key, it never decrypts RSA.
import gc
import hashlib
import os

import cryptolib

_CBC = 2  # cryptolib mode number; the named constants are missing on some ports
_H = 32  # SHA-256 output size
room = None  # heap held for the RSA step by whoever seals (the collector): let go just before it


def random(n):
    return os.urandom(n)


def sha256(data):
    return hashlib.sha256(data).digest()


def _pads(key):
    if len(key) > 64:
        key = sha256(key)
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(len(key)):
        ipad[i] = key[i]
        opad[i] = key[i]
    for i in range(64):
        ipad[i] ^= 0x36
        opad[i] ^= 0x5C
    return ipad, opad


def hmac_sha256(key, *parts):
    """HMAC-SHA256 of the concatenation of parts, without concatenating them."""
    ipad, opad = _pads(key)
    inner = hashlib.sha256(ipad)
    for part in parts:
        inner.update(part)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def hkdf_sha256(ikm, salt, info, length):
    if length > 255 * _H:
        raise ValueError("HKDF length too large")
    prk = hmac_sha256(salt if salt else bytes(_H), ikm)
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block, info, bytes((counter,)))
        out.extend(block)
        counter += 1
    return bytes(out[:length])


def equal(a, b):
    """Compares two byte strings without stopping at the first difference."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def aes_cbc_encrypt(key, iv, plaintext):
    """AES-256-CBC with PKCS#7 padding."""
    n = len(plaintext)
    pad = 16 - n % 16
    buf = bytearray(n + pad)
    buf[:n] = plaintext
    for i in range(n, n + pad):
        buf[i] = pad
    cryptolib.aes(key, _CBC, iv).encrypt(buf, buf)  # in place: no second buffer
    return buf


def aes_cbc_decrypt(key, iv, ciphertext):
    """Inverse of aes_cbc_encrypt; raises ValueError on a bad length or padding."""
    n = len(ciphertext)
    if n == 0 or n % 16:
        raise ValueError("ciphertext length is not a positive multiple of 16")
    buf = bytearray(ciphertext)
    cryptolib.aes(key, _CBC, iv).decrypt(buf, buf)
    pad = buf[-1]
    bad = pad == 0 or pad > 16
    for i in range(n - 16, n):
        bad |= (i >= n - pad) and buf[i] != pad
    if bad:
        raise ValueError("bad padding")
    return bytes(memoryview(buf)[: n - pad])


def _mgf1_xor(out, start, length, seed):
    """XORs MGF1-SHA256(seed) into out[start:start+length], one 32-byte block at a time."""
    counter = 0
    c = bytearray(4)
    p = 0
    while p < length:
        c[0] = counter >> 24
        c[1] = (counter >> 16) & 0xFF
        c[2] = (counter >> 8) & 0xFF
        c[3] = counter & 0xFF
        h = hashlib.sha256(seed)
        h.update(c)
        block = h.digest()
        for i in range(min(_H, length - p)):
            out[start + p + i] ^= block[i]
        p += _H
        counter += 1


_known = [0, 1]  # the last modulus measured and its length: the bank's, at every operation


def modulus_len(n):
    """Byte length of an RSA modulus (MicroPython ints have no bit_length), remembered for
    the last modulus: its hex string (515 bytes for 2048 bits) is made once, at boot, while
    the heap has such a piece, not at every operation."""
    if n != _known[0]:
        _known[0], _known[1] = n, (len("%x" % n) + 1) // 2
    return _known[1]


def oaep_encrypt(public, message, label, seed=None):
    """RSAES-OAEP (RFC 8017) with SHA-256 and MGF1-SHA256. public = (n, e)."""
    n, e = public
    k = modulus_len(n)
    m_len = len(message)
    if m_len > k - 2 * _H - 2:
        raise ValueError("message too long for the key")
    if seed is None:
        seed = os.urandom(_H)
    em = bytearray(k)  # 0x00 | seed | DB, DB = lHash | PS | 0x01 | M
    em[1 : 1 + _H] = seed
    db = 1 + _H
    em[db : db + _H] = sha256(label)
    em[k - m_len - 1] = 1
    em[k - m_len :] = message
    _mgf1_xor(em, db, k - db, seed)
    _mgf1_xor(em, 1, _H, memoryview(em)[db:])  # the masked DB read in place: no 223-byte copy
    global room
    if room is not None:  # let go, with the MGF1 temporaries: pow's integers get it whole
        room = None
        gc.collect()
    c = pow(int.from_bytes(em, "big"), e, n)
    return c.to_bytes(k, "big")

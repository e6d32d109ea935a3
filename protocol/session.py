# ecoin recipes, version 2: the key schedule and the sealing and opening of every message.
#
# Runs unchanged on MicroPython and CPython. Every function takes `cr`, a cryptography
# backend (ucrypto on the device, ecoin.common.crypto on CPython), so the same code builds and
# checks frames on both sides. Randomness (op_id, iv, OAEP seed) can be injected for test
# vectors; by default it is fresh from the backend every time.
try:
    from . import wire
except ImportError:  # MicroPython: the firmware's modules are flat
    import wire  # type: ignore[no-redef]

HEADER_LABEL = b"ecoin/v2 coin header"
SESSION_INFO = b"ecoin/v2 session keys"
SERVICE_LABEL = b"ecoin/v2 service\x00"
OPERATION_LABEL = b"ecoin/v2 operation\x00"
RESULT_LABEL = b"ecoin/v2 result\x00"
TOPUP_AUTH_INFO = b"ecoin/v2 topup request key"
TOPUP_KEYS_INFO = b"ecoin/v2 topup response keys"
# The kid names a key file, not a message: it keeps its v1 label so that a bank's coin keys
# (pki/coin/<kid>.key) keep their names across the upgrade (PROTOCOL.md 8).
KID_LABEL = b"ecoin/v1 kid\x00"

_T = wire.TAG_LEN


class InvalidTag(Exception):
    """A tag, a key or a padding did not check out. Deliberately one error with no detail,
    so that no failure can be told apart from another (no oracle)."""


def key_id(cr, modulus):
    """The 8-byte id of a coin key: SHA-256(KID_LABEL | modulus, big-endian) truncated."""
    k = (len("%x" % modulus) + 1) // 2  # MicroPython ints have no bit_length
    return cr.sha256(KID_LABEL + modulus.to_bytes(k, "big"))[: wire.KID_LEN]


def service_tag(cr, service):
    return cr.sha256(SERVICE_LABEL + wire.service_name(service))[: wire.SERVICE_TAG_LEN]


def coins_of(coins):
    """Checks the coins of one header: 1 to HEADER_COINS_MAX coins of 32 bytes, back to back.
    Returns how many there are (the price the device pays, PROTOCOL.md 4.1)."""
    if not isinstance(coins, (bytes, bytearray, memoryview)):
        raise TypeError("coins must be bytes")
    n = len(coins) // wire.COIN_LEN
    if not 1 <= n <= wire.HEADER_COINS_MAX or len(coins) % wire.COIN_LEN:
        raise ValueError("coins must be 1 to 4 coins of 32 bytes")
    return n


def session_keys(cr, coins, op_id):
    """(k_enc, k_mac) = HKDF-SHA256(ikm=coins, salt=op_id, info=SESSION_INFO), 32 bytes each;
    ikm is every coin of the header back to back (just the coin when there is one)."""
    okm = cr.hkdf_sha256(coins, op_id, SESSION_INFO, 64)
    return okm[:32], okm[32:]


def _sign(cr, k_mac, frame, label=b""):
    """Writes HMAC(k_mac, label | frame[:-32]) into the frame's last 32 bytes."""
    body = memoryview(frame)[:-_T]
    frame[-_T:] = cr.hmac_sha256(k_mac, label, body)
    return frame


def _check(cr, k_mac, frame, tag, label=b""):
    body = memoryview(frame)[:-_T]
    want = cr.hmac_sha256(k_mac, label, body)
    if not cr.equal(want, tag):
        raise InvalidTag()


def _decrypt(cr, k_enc, iv, ct):
    try:
        return cr.aes_cbc_decrypt(k_enc, iv, ct)
    except ValueError:
        raise InvalidTag() from None


def _payload(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("payload must be bytes")
    if len(data) > wire.PAYLOAD_MAX:
        raise ValueError("payload larger than 4096 bytes")
    return data


# Operation: device -> analyst, redeemed at the bank.
#
# The tag of an OPERATION is HMAC(k_mac, OPERATION_LABEL | digest), digest = SHA-256 of every
# byte before the tag. The bank gets the header, the digest and the tag (64 bytes more than
# v1 per redemption, where the frame itself would be up to 4.6 KB), checks the tag with the
# k_mac it derives from the coin, and binds the spend to the digest (PROTOCOL.md 4.1, 7.3).


def seal_header(cr, public, coins, iv, op_id, service, seed=None):
    """RSA-OAEP of the header plaintext, coins | iv | op_id | service tag, under the bank's
    coin key (public = (n, e)); split_header undoes it on the bank's side. The coins (1 to 4)
    are the price the device agreed to: inside the header nobody can add or take one."""
    c = coins_of(coins) * wire.COIN_LEN
    plain = bytearray(c + wire.HEADER_FIXED_LEN)
    plain[0:c] = coins
    plain[c : c + 16] = wire.fixed(iv, wire.IV_LEN, "iv")
    plain[c + 16 : c + 32] = wire.fixed(op_id, wire.OP_ID_LEN, "op_id")
    plain[c + 32 :] = service_tag(cr, service)
    return cr.oaep_encrypt(public, plain, HEADER_LABEL, seed)


def split_header(plain):
    """Bank side: (coins, iv, op_id, service_tag) from a decrypted header; coins holds
    1 to 4 coins of 32 bytes back to back."""
    c = len(plain) - wire.HEADER_FIXED_LEN
    if c % wire.COIN_LEN or not 1 <= c // wire.COIN_LEN <= wire.HEADER_COINS_MAX:
        raise wire.InvalidFrame("header plaintext must be 72, 104, 136 or 168 bytes")
    return bytes(plain[:c]), bytes(plain[c : c + 16]), bytes(plain[c + 16 : c + 32]), bytes(plain[c + 32 :])


def operation_digest(cr, frame):
    """SHA-256 of every byte of an OPERATION before its tag."""
    return cr.sha256(memoryview(frame)[:-_T])


def operation_tag(cr, k_mac, digest):
    return cr.hmac_sha256(k_mac, OPERATION_LABEL, digest)


def check_operation_tag(cr, k_mac, digest, tag):
    """Bank side, before it spends: the tag over the digest the analyst sent, in constant time."""
    if not cr.equal(operation_tag(cr, k_mac, digest), tag):
        raise InvalidTag()


def seal_operation(cr, public, kid, coins, service, readings, op_id=None, iv=None, seed=None):
    """Builds an OPERATION frame paying with `coins` (1 to 4 coins back to back: the price).
    Returns (op_id, k_enc, k_mac, frame); the device keeps the first three to open the answer."""
    _payload(readings)  # (seal_header checks the coins)
    op_id = op_id or cr.random(wire.OP_ID_LEN)
    iv = iv or cr.random(wire.IV_LEN)
    header = seal_header(cr, public, coins, iv, op_id, service, seed)
    k_enc, k_mac = session_keys(cr, coins, op_id)
    ct = cr.aes_cbc_encrypt(k_enc, iv, readings)
    frame = wire.encode_operation(op_id, kid, service, header, ct)
    ct = None
    # operation_tag(operation_digest(frame)), inlined: on the device every call costs heap.
    frame[-_T:] = cr.hmac_sha256(k_mac, OPERATION_LABEL, cr.sha256(memoryview(frame)[:-_T]))
    return op_id, k_enc, k_mac, frame


def open_operation(cr, frame, k_enc, k_mac, iv):
    """Analyst side, with the keys the bank returned: checks the tag, then decrypts."""
    fields = wire.decode_operation(frame)
    check_operation_tag(cr, k_mac, operation_digest(cr, frame), fields[5])
    return _decrypt(cr, k_enc, iv, fields[4])


# Result: analyst -> device.


def seal_result(cr, op_id, k_enc, k_mac, result, iv=None):
    _payload(result)
    iv = iv or cr.random(wire.IV_LEN)
    frame = wire.encode_result(op_id, iv, cr.aes_cbc_encrypt(k_enc, iv, result))
    return _sign(cr, k_mac, frame, RESULT_LABEL)


def open_result(cr, frame, op_id, k_enc, k_mac):
    """Device side: accepts a result only for the awaited op_id and only with a good tag."""
    got_op, iv, ct, tag = wire.decode_result(frame)
    if not cr.equal(got_op, op_id):
        raise InvalidTag()
    _check(cr, k_mac, frame, tag, RESULT_LABEL)
    return _decrypt(cr, k_enc, iv, ct)


# Top-up: device -> bank (relayed by the gateway) and back.


def topup_auth_key(cr, device_key):
    return cr.hkdf_sha256(device_key, b"", TOPUP_AUTH_INFO, 32)


def topup_keys(cr, device_key, counter):
    okm = cr.hkdf_sha256(device_key, counter.to_bytes(4, "big"), TOPUP_KEYS_INFO, 64)
    return okm[:32], okm[32:]


def seal_topup_request(cr, device_key, device, counter, count, op_id=None):
    op_id = op_id or cr.random(wire.OP_ID_LEN)
    frame = wire.encode_topup_request(op_id, device, counter, count)
    return op_id, _sign(cr, topup_auth_key(cr, device_key), frame)


def check_topup_request(cr, device_key, frame):
    """Bank side: returns (op_id, device_id, counter, count) once the tag checks out.
    The caller must also insist the counter is above the last one it accepted."""
    op_id, device, counter, count, tag = wire.decode_topup_request(frame)
    _check(cr, topup_auth_key(cr, device_key), frame, tag)
    return op_id, device, counter, count


def seal_topup_response(cr, device_key, op_id, counter, expires, coins, iv=None):
    """coins: a bytes-like of N*32 bytes. expires: unix seconds."""
    if not coins or len(coins) % wire.COIN_LEN or len(coins) > wire.TOPUP_MAX_COINS * wire.COIN_LEN:
        raise ValueError("coins must be 1 to 100 coins of 32 bytes")
    k_enc, k_mac = topup_keys(cr, device_key, counter)
    iv = iv or cr.random(wire.IV_LEN)
    plain = expires.to_bytes(4, "big") + bytes(coins)
    frame = wire.encode_topup_response(op_id, counter, iv, cr.aes_cbc_encrypt(k_enc, iv, plain))
    return _sign(cr, k_mac, frame)


def open_topup_response(cr, device_key, frame, op_id, counter):
    """Device side: returns (expires, coins) for the request it is waiting for."""
    got_op, got_counter, iv, ct, tag = wire.decode_topup_response(frame)
    if got_counter != counter or not cr.equal(got_op, op_id):
        raise InvalidTag()
    k_enc, k_mac = topup_keys(cr, device_key, counter)
    _check(cr, k_mac, frame, tag)
    plain = _decrypt(cr, k_enc, iv, ct)
    if len(plain) < 4 + wire.COIN_LEN or (len(plain) - 4) % wire.COIN_LEN:
        raise InvalidTag()
    return int.from_bytes(plain[:4], "big"), plain[4:]

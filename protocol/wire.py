# ecoin wire format, version 2: byte layout of every frame, nothing else.
#
# This one file runs unchanged on MicroPython (the collector) and on CPython (bank, analyst,
# gateway), so the two sides cannot drift apart. It uses only struct; no I/O, no clock, no
# randomness, no cryptography (see session.py for the recipes that fill and check the tags).
# docs/PROTOCOL.md is the specification; tests/vectors/*.json pin it on both runtimes.
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


VERSION = const(2)  # v1 frames are refused (PROTOCOL.md 8); nothing speaks v1 any more

# Frame types (byte 1).
T_OPERATION = const(1)
T_RESULT = const(2)
T_ERROR = const(3)
T_QUERY = const(4)
T_STATUS = const(5)
T_TOPUP_REQUEST = const(6)
T_TOPUP_RESPONSE = const(7)
TYPES = (T_OPERATION, T_RESULT, T_ERROR, T_QUERY, T_STATUS, T_TOPUP_REQUEST, T_TOPUP_RESPONSE)

# Codes carried by ERROR frames: deliberately generic, they never say why a coin failed.
E_FAILED = const(1)  # the operation failed (any reason: coin, bank, analyser)
E_UNAVAILABLE = const(2)  # no live analyst offers the service; nothing was forwarded
E_TIMEOUT = const(3)  # the gateway gave up waiting for an answer
E_DROPPED = const(4)  # the gateway's store-and-forward queue dropped the operation
E_REJECTED = const(5)  # the gateway refused the frame (malformed, too large, rate limited)
ERROR_CODES = (E_FAILED, E_UNAVAILABLE, E_TIMEOUT, E_DROPPED, E_REJECTED)

# Codes carried by STATUS frames (answers to QUERY).
S_LIVE = const(0)
S_UNAVAILABLE = const(2)
STATUS_CODES = (S_LIVE, S_UNAVAILABLE)

# Sizes, named once.
PREFIX_LEN = const(18)  # version u8 | type u8 | op_id 16
OP_ID_LEN = const(16)
KID_LEN = const(8)
IV_LEN = const(16)
TAG_LEN = const(32)
COIN_LEN = const(32)
SERVICE_TAG_LEN = const(8)
HEADER_PLAIN_LEN = const(72)  # one coin: coins 32 | iv 16 | op_id 16 | service tag 8
HEADER_FIXED_LEN = const(40)  # iv 16 | op_id 16 | service tag 8, after the coins
HEADER_COINS_MAX = const(4)  # 4 * 32 + 40 = 168 <= 190, what RSA-OAEP-2048 (SHA-256) carries
PRICE_MAX = const(255)  # a STATUS carries the price in one byte; no header pays above 4
HEADER_LENS = (256, 384)  # RSA-2048 and RSA-3072 coin keys
NAME_MAX = const(32)  # service names and device ids
PAYLOAD_MAX = const(4096)  # readings and results, plaintext bytes: the rule senders keep
CIPHER_MAX = const(4112)  # PAYLOAD_MAX padded (PKCS#7 always adds 1 to 16 bytes)
TOPUP_MAX_COINS = const(100)
TOPUP_PLAIN_MAX = const(3204)  # expires u32 | coins
FRAME_MAX = const(4700)  # larger than any valid frame; transports may reject earlier

SERVICE_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789._-"
DEVICE_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


class InvalidFrame(ValueError):
    """A frame that does not follow this layout. The message says what is wrong."""


def _name(value, alphabet, what):
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(what + " must be str or bytes")
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(what + " must be 1 to 32 characters")
    for c in value:
        if c not in alphabet:
            raise ValueError(what + " has a character outside [a-z0-9._-]")
    return bytes(value)


def service_name(value):
    """Checks and returns a service name as bytes (lower case letters, digits, '.', '_', '-')."""
    return _name(value, SERVICE_CHARS, "service name")


def device_id(value):
    """Checks and returns a device id as bytes (letters, digits, '.', '_', '-')."""
    return _name(value, DEVICE_CHARS, "device id")


def fixed(value, size, what):
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(what + " must be bytes")
    if len(value) != size:
        raise ValueError(what + " must be " + str(size) + " bytes")
    return value


def _prefix(buf, ftype, op_id):
    buf[0] = VERSION
    buf[1] = ftype
    buf[2:PREFIX_LEN] = fixed(op_id, OP_ID_LEN, "op_id")


# Encoders. Frames that end in a tag are built with the tag zeroed; the caller (session.py)
# computes HMAC over buf[:-TAG_LEN] and writes it into buf[-TAG_LEN:], so no copy is made.


def encode_operation(op_id, kid, service, header, ciphertext):
    service = service_name(service)
    fixed(kid, KID_LEN, "kid")
    if len(header) not in HEADER_LENS:
        raise ValueError("header must be 256 or 384 bytes")
    n_ct = len(ciphertext)
    if n_ct == 0 or n_ct % 16 or n_ct > CIPHER_MAX:
        raise ValueError("ciphertext must be 16 to 4112 bytes, a multiple of 16")
    n_svc = len(service)
    buf = bytearray(PREFIX_LEN + KID_LEN + 1 + n_svc + 2 + len(header) + 2 + n_ct + TAG_LEN)
    _prefix(buf, T_OPERATION, op_id)
    p = PREFIX_LEN
    buf[p : p + KID_LEN] = kid
    p += KID_LEN
    buf[p] = n_svc
    buf[p + 1 : p + 1 + n_svc] = service
    p += 1 + n_svc
    struct.pack_into(">H", buf, p, len(header))
    buf[p + 2 : p + 2 + len(header)] = header
    p += 2 + len(header)
    struct.pack_into(">H", buf, p, n_ct)
    buf[p + 2 : p + 2 + n_ct] = ciphertext
    return buf


def encode_result(op_id, iv, ciphertext):
    fixed(iv, IV_LEN, "iv")
    n_ct = len(ciphertext)
    if n_ct == 0 or n_ct % 16 or n_ct > CIPHER_MAX:
        raise ValueError("ciphertext must be 16 to 4112 bytes, a multiple of 16")
    buf = bytearray(PREFIX_LEN + IV_LEN + 2 + n_ct + TAG_LEN)
    _prefix(buf, T_RESULT, op_id)
    buf[PREFIX_LEN : PREFIX_LEN + IV_LEN] = iv
    p = PREFIX_LEN + IV_LEN
    struct.pack_into(">H", buf, p, n_ct)
    buf[p + 2 : p + 2 + n_ct] = ciphertext
    return buf


def _encode_code(ftype, op_id, code, allowed):
    if code not in allowed:
        raise ValueError("unknown code " + str(code))
    buf = bytearray(PREFIX_LEN + 1)
    _prefix(buf, ftype, op_id)
    buf[PREFIX_LEN] = code
    return buf


def encode_error(op_id, code):
    return _encode_code(T_ERROR, op_id, code, ERROR_CODES)


def encode_status(op_id, code, price=1):
    """STATUS: the code, then the price in coins of one operation (0 unless LIVE)."""
    if code not in STATUS_CODES:
        raise ValueError("unknown code " + str(code))
    if not 1 <= price <= PRICE_MAX:
        raise ValueError("price must be 1 to 255 coins")
    buf = bytearray(PREFIX_LEN + 2)
    _prefix(buf, T_STATUS, op_id)
    buf[PREFIX_LEN] = code
    buf[PREFIX_LEN + 1] = price if code == S_LIVE else 0
    return buf


def encode_query(op_id, service):
    service = service_name(service)
    buf = bytearray(PREFIX_LEN + 1 + len(service))
    _prefix(buf, T_QUERY, op_id)
    buf[PREFIX_LEN] = len(service)
    buf[PREFIX_LEN + 1 :] = service
    return buf


def encode_topup_request(op_id, device, counter, count):
    device = device_id(device)
    if not 0 < counter < 0x100000000:
        raise ValueError("counter must be 1 to 2**32-1")
    if not 1 <= count <= TOPUP_MAX_COINS:
        raise ValueError("count must be 1 to 100")
    n_dev = len(device)
    buf = bytearray(PREFIX_LEN + 1 + n_dev + 4 + 2 + TAG_LEN)
    _prefix(buf, T_TOPUP_REQUEST, op_id)
    buf[PREFIX_LEN] = n_dev
    p = PREFIX_LEN + 1
    buf[p : p + n_dev] = device
    struct.pack_into(">IH", buf, p + n_dev, counter, count)
    return buf


def encode_topup_response(op_id, counter, iv, ciphertext):
    fixed(iv, IV_LEN, "iv")
    n_ct = len(ciphertext)
    if n_ct == 0 or n_ct % 16 or n_ct > TOPUP_PLAIN_MAX + 16:
        raise ValueError("ciphertext must be 16 to 3220 bytes, a multiple of 16")
    buf = bytearray(PREFIX_LEN + 4 + IV_LEN + 2 + n_ct + TAG_LEN)
    _prefix(buf, T_TOPUP_RESPONSE, op_id)
    p = PREFIX_LEN
    struct.pack_into(">I", buf, p, counter)
    buf[p + 4 : p + 4 + IV_LEN] = iv
    p += 4 + IV_LEN
    struct.pack_into(">H", buf, p, n_ct)
    buf[p + 2 : p + 2 + n_ct] = ciphertext
    return buf


# Decoders. Each checks every length against the frame's end and raises InvalidFrame.


def frame_type(frame):
    """Returns (type, op_id) after checking the common prefix."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError("frame must be bytes")
    n = len(frame)
    if n < PREFIX_LEN:
        raise InvalidFrame("truncated frame: " + str(n) + " bytes")
    if n > FRAME_MAX:
        raise InvalidFrame("oversized frame: " + str(n) + " bytes")
    if frame[0] != VERSION:
        raise InvalidFrame("unsupported version " + str(frame[0]))
    if frame[1] not in TYPES:
        raise InvalidFrame("unknown frame type " + str(frame[1]))
    return frame[1], bytes(frame[2:PREFIX_LEN])


def _expect(frame, ftype):
    t, op_id = frame_type(frame)
    if t != ftype:
        raise InvalidFrame("expected frame type " + str(ftype) + ", got " + str(t))
    return op_id


def _take(frame, p, n, what):
    if p + n > len(frame):
        raise InvalidFrame("truncated " + what)
    return bytes(frame[p : p + n]), p + n


def _take16(frame, p, what):
    if p + 2 > len(frame):
        raise InvalidFrame("truncated " + what + " length")
    return struct.unpack_from(">H", frame, p)[0], p + 2


def _take_name(frame, p, check, what):
    if p >= len(frame):
        raise InvalidFrame("truncated " + what)
    raw, p = _take(frame, p + 1, frame[p], what)
    try:
        return check(raw).decode(), p
    except ValueError as exc:
        raise InvalidFrame(str(exc)) from None


def _cipher(frame, p, limit):
    n, p = _take16(frame, p, "ciphertext")
    if n == 0 or n % 16 or n > limit:
        raise InvalidFrame("bad ciphertext length " + str(n))
    return _take(frame, p, n, "ciphertext")


def _end(frame, p):
    """Takes the final tag and insists nothing follows it."""
    if len(frame) != p + TAG_LEN:
        if len(frame) < p + TAG_LEN:
            raise InvalidFrame("truncated tag")
        raise InvalidFrame("trailing bytes after tag")
    return bytes(frame[p:])


def decode_operation(frame):
    """Returns (op_id, kid, service, header, ciphertext, tag). The tag covers frame[:-32]."""
    op_id = _expect(frame, T_OPERATION)
    kid, p = _take(frame, PREFIX_LEN, KID_LEN, "kid")
    service, p = _take_name(frame, p, service_name, "service name")
    n, p = _take16(frame, p, "header")
    if n not in HEADER_LENS:
        raise InvalidFrame("bad header length " + str(n))
    header, p = _take(frame, p, n, "header")
    ct, p = _cipher(frame, p, CIPHER_MAX)
    return op_id, kid, service, header, ct, _end(frame, p)


def decode_result(frame):
    """Returns (op_id, iv, ciphertext, tag)."""
    op_id = _expect(frame, T_RESULT)
    iv, p = _take(frame, PREFIX_LEN, IV_LEN, "iv")
    ct, p = _cipher(frame, p, CIPHER_MAX)
    return op_id, iv, ct, _end(frame, p)


def _decode_code(frame, ftype, allowed):
    op_id = _expect(frame, ftype)
    if len(frame) != PREFIX_LEN + 1:
        raise InvalidFrame("code frame must be 19 bytes")
    code = frame[PREFIX_LEN]
    if code not in allowed:
        raise InvalidFrame("unknown code " + str(code))
    return op_id, code


def decode_error(frame):
    """Returns (op_id, code)."""
    return _decode_code(frame, T_ERROR, ERROR_CODES)


def decode_status(frame):
    """Returns (op_id, code, price). A 19-byte STATUS (a gateway before prices) is price 1."""
    op_id = _expect(frame, T_STATUS)
    n = len(frame) - PREFIX_LEN
    if n != 1 and n != 2:
        raise InvalidFrame("status frame must be 19 or 20 bytes")
    code = frame[PREFIX_LEN]
    if code not in STATUS_CODES:
        raise InvalidFrame("unknown code " + str(code))
    if n == 1:
        return op_id, code, 1 if code == S_LIVE else 0
    price = frame[PREFIX_LEN + 1]
    if (price == 0) != (code != S_LIVE):
        raise InvalidFrame("a LIVE status needs a price of 1 to 255, any other a price of 0")
    return op_id, code, price


def decode_query(frame):
    """Returns (op_id, service)."""
    op_id = _expect(frame, T_QUERY)
    service, p = _take_name(frame, PREFIX_LEN, service_name, "service name")
    if p != len(frame):
        raise InvalidFrame("trailing bytes after service name")
    return op_id, service


def decode_topup_request(frame):
    """Returns (op_id, device_id, counter, count, tag)."""
    op_id = _expect(frame, T_TOPUP_REQUEST)
    device, p = _take_name(frame, PREFIX_LEN, device_id, "device id")
    if p + 6 > len(frame):
        raise InvalidFrame("truncated counter")
    counter, count = struct.unpack_from(">IH", frame, p)
    if counter == 0 or not 1 <= count <= TOPUP_MAX_COINS:
        raise InvalidFrame("bad counter or count")
    return op_id, device, counter, count, _end(frame, p + 6)


def decode_topup_response(frame):
    """Returns (op_id, counter, iv, ciphertext, tag)."""
    op_id = _expect(frame, T_TOPUP_RESPONSE)
    if PREFIX_LEN + 4 > len(frame):
        raise InvalidFrame("truncated counter")
    counter = struct.unpack_from(">I", frame, PREFIX_LEN)[0]
    iv, p = _take(frame, PREFIX_LEN + 4, IV_LEN, "iv")
    ct, p = _cipher(frame, p, TOPUP_PLAIN_MAX + 16)
    return op_id, counter, iv, ct, _end(frame, p)

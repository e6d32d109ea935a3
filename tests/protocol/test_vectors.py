"""The vectors, checked on CPython with the `cryptography` backend."""

from __future__ import annotations

import pytest

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

from .conftest import load, private_key

x = bytes.fromhex
MSG = load("messages.json")
PRIM = load("primitives.json")


@pytest.mark.parametrize("v", PRIM["sha256"])
def test_sha256(v):
    assert cr.sha256(x(v["data"])) == x(v["digest"])


@pytest.mark.parametrize("v", PRIM["hmac"])
def test_hmac(v):
    assert cr.hmac_sha256(x(v["key"]), x(v["data"])) == x(v["mac"])


@pytest.mark.parametrize("v", PRIM["hkdf"])
def test_hkdf(v):
    assert cr.hkdf_sha256(x(v["ikm"]), x(v["salt"]), x(v["info"]), v["length"]) == x(v["okm"])


@pytest.mark.parametrize("v", PRIM["aes_cbc"])
def test_aes_cbc(v):
    assert cr.aes_cbc_encrypt(x(v["key"]), x(v["iv"]), x(v["plaintext"])) == x(v["ciphertext"])
    assert cr.aes_cbc_decrypt(x(v["key"]), x(v["iv"]), x(v["ciphertext"])) == x(v["plaintext"])


@pytest.mark.parametrize("v", PRIM["oaep"])
def test_oaep(v):
    key = private_key(v["key"])
    assert key.decrypt(x(v["ciphertext"]), cr.oaep(x(v["label"]))) == x(v["message"])


@pytest.mark.parametrize("v", MSG["operation"])
def test_operation(v):
    frame = x(v["frame"])
    op_id, kid, service, header, ct, tag = wire.decode_operation(frame)
    key = private_key(v["key"])
    assert kid == session.key_id(cr, key.public_key().public_numbers().n)
    plain = key.decrypt(header, cr.oaep(session.HEADER_LABEL))
    coin, iv, h_op, s_tag = session.split_header(plain)
    assert (coin, iv, h_op, s_tag) == (x(v["coin"]), x(v["iv"]), op_id, session.service_tag(cr, service))
    assert session.coins_of(coin) == v["coins"] and len(plain) == 32 * v["coins"] + 40 <= 190
    k_enc, k_mac = session.session_keys(cr, coin, op_id)
    assert (k_enc, k_mac) == (x(v["k_enc"]), x(v["k_mac"]))
    assert session.open_operation(cr, frame, k_enc, k_mac, iv) == x(v["readings"])
    pub = key.public_key().public_numbers()
    again = session.seal_header(cr, (pub.n, pub.e), coin, iv, op_id, service)  # a fresh OAEP seed
    assert key.decrypt(again, cr.oaep(session.HEADER_LABEL)) == plain
    digest = session.operation_digest(cr, frame)
    assert digest == x(v["digest"]) == cr.sha256(frame[:-32])
    session.check_operation_tag(cr, k_mac, digest, tag)  # what the bank checks before it spends
    with pytest.raises(session.InvalidTag):
        session.check_operation_tag(cr, k_mac, cr.sha256(b"other readings"), tag)


@pytest.mark.parametrize("v", MSG["result"])
def test_result(v):
    args = (x(v["op_id"]), x(v["k_enc"]), x(v["k_mac"]))
    assert session.open_result(cr, x(v["frame"]), *args) == x(v["result"])
    assert session.seal_result(cr, *args, x(v["result"]), x(v["iv"])) == x(v["frame"])


@pytest.mark.parametrize("v", MSG["error"])
def test_error(v):
    assert wire.encode_error(x(v["op_id"]), v["code"]) == x(v["frame"])
    assert wire.decode_error(x(v["frame"])) == (x(v["op_id"]), v["code"])


@pytest.mark.parametrize("v", MSG["status"])
def test_status_carries_the_price(v):
    if not v.get("decode_only"):
        assert wire.encode_status(x(v["op_id"]), v["code"], v["price"] or 1) == x(v["frame"])
    assert wire.decode_status(x(v["frame"])) == (x(v["op_id"]), v["code"], v["price"])


def test_the_vectors_cover_multi_coin_headers_and_prices():
    assert {v["coins"] for v in MSG["operation"]} == {1, 2, 3, 4}
    assert {v["price"] for v in MSG["status"]} >= {0, 1, 2, 3, 255}


def test_a_header_holds_one_to_four_coins():
    key = private_key(2048).public_key().public_numbers()
    for bad in (b"", bytes(31), bytes(5 * 32), bytes(33)):
        with pytest.raises(ValueError, match="1 to 4 coins"):
            session.seal_header(cr, (key.n, key.e), bad, bytes(16), bytes(16), "average")
    for plain in (bytes(40), bytes(71), bytes(5 * 32 + 40)):
        with pytest.raises(wire.InvalidFrame):
            session.split_header(plain)


@pytest.mark.parametrize("v", MSG["query"])
def test_query(v):
    assert wire.encode_query(x(v["op_id"]), v["service"]) == x(v["frame"])
    assert wire.decode_query(x(v["frame"])) == (x(v["op_id"]), v["service"])


@pytest.mark.parametrize("v", MSG["topup_request"])
def test_topup_request(v):
    op_id, frame = session.seal_topup_request(
        cr, x(v["device_key"]), v["device_id"], v["counter"], v["count"], x(v["op_id"])
    )
    assert frame == x(v["frame"])
    assert session.check_topup_request(cr, x(v["device_key"]), frame) == (
        op_id,
        v["device_id"],
        v["counter"],
        v["count"],
    )
    with pytest.raises(session.InvalidTag):
        session.check_topup_request(cr, bytes(32), frame)


@pytest.mark.parametrize("v", MSG["topup_response"])
def test_topup_response(v):
    key, op_id = x(v["device_key"]), x(v["op_id"])
    frame = session.seal_topup_response(cr, key, op_id, v["counter"], v["expires"], x(v["coins"]), x(v["iv"]))
    assert frame == x(v["frame"])
    assert session.open_topup_response(cr, key, frame, op_id, v["counter"]) == (v["expires"], x(v["coins"]))
    with pytest.raises(session.InvalidTag):  # the answer to another counter
        session.open_topup_response(cr, key, frame, op_id, v["counter"] - 1)


DECODERS = {
    "operation": wire.decode_operation,
    "result": wire.decode_result,
    "error": wire.decode_error,
    "status": wire.decode_status,
    "query": wire.decode_query,
    "topup_request": wire.decode_topup_request,
    "topup_response": wire.decode_topup_response,
}


@pytest.mark.parametrize("v", load("invalid.json")["frames"], ids=lambda v: v["name"])
def test_invalid_frames(v):
    with pytest.raises(wire.InvalidFrame, match=v["match"]):
        DECODERS[v["kind"]](x(v["frame"]))


def _flips(frame: bytes):
    buf = bytearray(frame)
    for i in range(len(buf) * 8):
        buf[i >> 3] ^= 1 << (i & 7)
        yield bytes(buf)
        buf[i >> 3] ^= 1 << (i & 7)


def test_every_bit_flip_of_an_operation_is_rejected():
    v = MSG["operation"][0]
    args = (x(v["k_enc"]), x(v["k_mac"]), x(v["iv"]))
    n = 0
    for bad in _flips(x(v["frame"])):
        with pytest.raises((wire.InvalidFrame, session.InvalidTag)):
            session.open_operation(cr, bad, *args)
        n += 1
    assert n == len(x(v["frame"])) * 8


def test_every_bit_flip_of_a_result_is_rejected():
    v = MSG["result"][0]
    args = (x(v["op_id"]), x(v["k_enc"]), x(v["k_mac"]))
    for bad in _flips(x(v["frame"])):
        with pytest.raises((wire.InvalidFrame, session.InvalidTag)):
            session.open_result(cr, bad, *args)


def test_result_for_another_operation_is_rejected():
    a, b = MSG["result"][0], MSG["result"][2]
    with pytest.raises(session.InvalidTag):  # b's frame, a's awaited op_id and keys: a splice
        session.open_result(cr, x(b["frame"]), x(a["op_id"]), x(a["k_enc"]), x(a["k_mac"]))


def test_wrong_oaep_label_is_rejected():
    key = private_key(2048)
    pub = key.public_key().public_numbers()
    header = cr.oaep_encrypt((pub.n, pub.e), bytes(72), b"ecoin/v0 wrong label")
    with pytest.raises(ValueError, match="Decryption failed"):
        key.decrypt(header, cr.oaep(session.HEADER_LABEL))


def test_an_operation_header_is_bound_to_its_service():
    v = MSG["operation"][0]
    plain = private_key(2048).decrypt(wire.decode_operation(x(v["frame"]))[3], cr.oaep(session.HEADER_LABEL))
    assert session.split_header(plain)[3] != session.service_tag(cr, "stats")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: wire.service_name("Average"), ValueError, "outside"),
        (lambda: wire.service_name("a" * 33), ValueError, "1 to 32"),
        (lambda: wire.device_id(7), TypeError, "str or bytes"),
        (lambda: wire.encode_error(bytes(16), 0), ValueError, "unknown code"),
        (lambda: wire.encode_query(bytes(15), "x"), ValueError, "op_id must be 16"),
        (lambda: session.seal_result(cr, bytes(16), bytes(32), bytes(32), b"x" * 4097), ValueError, "4096"),
        (lambda: session.seal_result(cr, bytes(16), bytes(32), bytes(32), "text"), TypeError, "bytes"),
        (lambda: wire.encode_topup_request(bytes(16), "d", 0, 1), ValueError, "counter"),
        (lambda: wire.encode_topup_request(bytes(16), "d", 1, 101), ValueError, "count"),
        (lambda: wire.frame_type("text"), TypeError, "bytes"),
    ],
)
def test_misuse_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_fresh_randomness_for_every_operation():
    key = private_key(2048).public_key().public_numbers()
    seen = set()
    for _ in range(3):
        op_id, _, _, frame = session.seal_operation(cr, (key.n, key.e), bytes(8), bytes(32), "average", b"{}")
        fields = wire.decode_operation(frame)
        seen.add((op_id, fields[3], fields[4]))
    assert len({s[0] for s in seen}) == len({s[1] for s in seen}) == len({s[2] for s in seen}) == 3

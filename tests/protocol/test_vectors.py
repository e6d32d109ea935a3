"""The vectors, checked on CPython with the `cryptography` backend."""

from __future__ import annotations

import shutil

import pytest

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

from . import make_vectors
from .conftest import VECTORS as VECTOR_DIR
from .conftest import load, private_key

x = bytes.fromhex
VECTORS = load("messages.json")["vectors"]
PRIM = load("primitives.json")
MODULES = {"wire": wire, "session": session}
BACKEND = make_vectors.SeededBackend()  # honours the OAEP seed a vector names; otherwise the CPython backend


def fields(kind: str, i: int = 0) -> dict:
    """The decoded fields of the i-th vector of a kind, for the checks beyond one vector."""
    v = [v for v in VECTORS if v["kind"] == kind][i]
    return {k: x(f["hex"]) if isinstance(f, dict) else f for k, f in v["fields"].items()}


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


def _function(name: str):
    module, attr = name.split(".")
    return getattr(MODULES[module], attr)


def _value(v, name: str):
    """An argument or a result, named as the vector names it."""
    if name == "cr":
        return BACKEND
    if name in ("pub", "n"):
        n = private_key(v["fields"]["key"]).public_key().public_numbers().n
        return (n, 65537) if name == "pub" else n
    field = v["fields"][name]
    return x(field["hex"]) if isinstance(field, dict) else field


def _plain(got):
    """bytes for bytearray or memoryview, tuples all the way down, so results compare."""
    if isinstance(got, (bytearray, memoryview)):
        return bytes(got)
    return tuple(_plain(g) for g in got) if isinstance(got, (tuple, list)) else got


def _run(v, call) -> None:
    args = [_value(v, a) for a in call["args"]]
    if "raises" in call:
        with pytest.raises(_function(call["raises"])):
            _function(call["fn"])(*args)
        return
    want = call["returns"]
    expected = tuple(_value(v, n) for n in want) if isinstance(want, list) else _value(v, want)
    assert _plain(_function(call["fn"])(*args)) == expected, call["fn"]


def _calls(v):
    return ([v["make"]] if "make" in v else []) + [v["read"]] + v["checks"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["kind"])
def test_message(v):
    """Every frame kind the same way: made, read and checked by the functions its vector names."""
    for call in _calls(v):
        _run(v, call)
    if "oaep" in v:  # a header inside the frame: standard OAEP, whatever seed made it
        o = {k: _value(v, n) if isinstance(n, str) else n for k, n in v["oaep"].items()}
        key = private_key(o["key"])
        assert key.decrypt(o["ciphertext"], cr.oaep(o["label"])) == o["message"]
        pub = key.public_key().public_numbers()
        fresh = cr.oaep_encrypt((pub.n, pub.e), o["message"], o["label"])  # the library's own seed
        assert key.decrypt(fresh, cr.oaep(o["label"])) == o["message"]


def test_every_frame_type_has_vectors_made_and_read():
    kinds = {name[2:].lower() for name in dir(wire) if name.startswith("T_")}
    assert len(kinds) == len(wire.TYPES)
    assert {v["kind"] for v in VECTORS} == kinds
    assert all("frame" in v["read"]["args"] for v in VECTORS)
    assert {v["kind"] for v in VECTORS if "make" in v} == kinds


def test_the_vectors_cover_multi_coin_headers_and_prices():
    assert {v["fields"]["coins"] for v in VECTORS if v["kind"] == "operation"} == {1, 2, 3, 4}
    assert {v["fields"]["price"] for v in VECTORS if v["kind"] == "status"} >= {0, 1, 2, 3, 255}


def test_the_vector_files_are_current(tmp_path):
    """make_vectors.py, rerun, writes the checked-in files byte for byte (nothing is fresh)."""
    shutil.copy(VECTOR_DIR / "keys.json", tmp_path / "keys.json")
    make_vectors.main(tmp_path)
    for name in ("keys.json", "primitives.json", "messages.json", "invalid.json"):
        assert (tmp_path / name).read_bytes() == (VECTOR_DIR / name).read_bytes(), name


def test_a_header_holds_one_to_four_coins():
    key = private_key(2048).public_key().public_numbers()
    for bad in (b"", bytes(31), bytes(5 * 32), bytes(33)):
        with pytest.raises(ValueError, match="1 to 4 coins"):
            session.seal_header(cr, (key.n, key.e), bad, bytes(16), bytes(16), "average")
    for plain in (bytes(40), bytes(71), bytes(5 * 32 + 40)):
        with pytest.raises(wire.InvalidFrame):
            session.split_header(plain)


@pytest.mark.parametrize("v", load("invalid.json")["frames"], ids=lambda v: v["name"])
def test_invalid_frames(v):
    with pytest.raises(wire.InvalidFrame, match=v["match"]):
        _function(v["read"])(x(v["frame"]))


def _flips(frame: bytes):
    buf = bytearray(frame)
    for i in range(len(buf) * 8):
        buf[i >> 3] ^= 1 << (i & 7)
        yield bytes(buf)
        buf[i >> 3] ^= 1 << (i & 7)


def test_every_bit_flip_of_an_operation_is_rejected():
    v = fields("operation")
    args = (v["k_enc"], v["k_mac"], v["iv"])
    n = 0
    for bad in _flips(v["frame"]):
        with pytest.raises((wire.InvalidFrame, session.InvalidTag)):
            session.open_operation(cr, bad, *args)
        n += 1
    assert n == len(v["frame"]) * 8


def test_every_bit_flip_of_a_result_is_rejected():
    v = fields("result")
    args = (v["op_id"], v["k_enc"], v["k_mac"])
    for bad in _flips(v["frame"]):
        with pytest.raises((wire.InvalidFrame, session.InvalidTag)):
            session.open_result(cr, bad, *args)


def test_result_for_another_operation_is_rejected():
    a, b = fields("result", 0), fields("result", 2)
    with pytest.raises(session.InvalidTag):  # b's frame, a's awaited op_id and keys: a splice
        session.open_result(cr, b["frame"], a["op_id"], a["k_enc"], a["k_mac"])


def test_wrong_oaep_label_is_rejected():
    key = private_key(2048)
    pub = key.public_key().public_numbers()
    header = cr.oaep_encrypt((pub.n, pub.e), bytes(72), b"ecoin/v0 wrong label")
    with pytest.raises(ValueError, match="Decryption failed"):
        key.decrypt(header, cr.oaep(session.HEADER_LABEL))


def test_an_operation_header_is_bound_to_its_service():
    v = fields("operation")
    plain = private_key(2048).decrypt(wire.decode_operation(v["frame"])[3], cr.oaep(session.HEADER_LABEL))
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

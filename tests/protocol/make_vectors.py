"""Regenerates tests/vectors/*.json on CPython (the `cryptography` backend).

    .venv/bin/python tests/protocol/make_vectors.py   (or -m tests.protocol.make_vectors)

The vectors are data: the tests on both runtimes read them; this script only writes them.
Randomness comes from a seeded generator, OAEP seeds included (SeededBackend), so a
rerun gives the same files byte for byte. Each message vector names the wire/session function
that makes its frame and the one that reads it, with arguments and results naming its fields:
the runners on both runtimes check every frame kind without knowing it.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

OUT = Path(__file__).resolve().parent.parent / "vectors"
SEED = 20261122
rng = random.Random(SEED)
KEYS: dict[int, dict[str, object]] = {}


def _mgf1(seed: bytes, length: int) -> bytes:
    blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range((length + 31) // 32))
    return b"".join(blocks)[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(i ^ j for i, j in zip(a, b, strict=True))


class SeededBackend:
    """The CPython backend, except that RSA-OAEP honours a given seed (test-only code).

    `cryptography` always draws its own OAEP seed, so a frame holding a header could never be
    made again byte for byte; with this backend the vectors name the seed, both runtimes rebuild
    the same frame, and make_vectors.py writes the same file on every run."""

    def __getattr__(self, name: str) -> Any:
        return getattr(cr, name)

    @staticmethod
    def oaep_encrypt(public: tuple[int, int], message: Any, label: bytes, seed: Any = None) -> bytes:
        if seed is None:
            return cr.oaep_encrypt(public, message, label)
        n, e = public
        k = (n.bit_length() + 7) // 8
        db = cr.sha256(label) + bytes(k - len(message) - 66) + b"\x01" + bytes(message)
        masked_db = _xor(db, _mgf1(bytes(seed), len(db)))
        em = b"\x00" + _xor(bytes(seed), _mgf1(masked_db, 32)) + masked_db
        return pow(int.from_bytes(em, "big"), e, n).to_bytes(k, "big")


def rb(n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def h(b: bytes | bytearray) -> str:
    return bytes(b).hex()


def test_key(bits: int) -> dict[str, object]:
    key = rsa.generate_private_key(65537, bits)
    nums = key.private_numbers()
    return {
        "bits": bits,
        "n": hex(nums.public_numbers.n),
        "e": 65537,
        "d": hex(nums.d),
        "p": hex(nums.p),
        "q": hex(nums.q),
    }


def primitives(keys: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {
        "sha256": [],
        "hmac": [],
        "hkdf": [],
        "aes_cbc": [],
        "oaep": [],
    }
    for n in (0, 1, 63, 64, 65, 200):
        data = rb(n)
        out["sha256"].append({"data": h(data), "digest": h(cr.sha256(data))})
        key = rb((n % 3) * 40 + 1)
        out["hmac"].append({"key": h(key), "data": h(data), "mac": h(cr.hmac_sha256(key, data))})
    for length in (32, 64, 100):
        ikm, salt, info = rb(32), rb(16 if length != 100 else 0), rb(12)
        out["hkdf"].append(
            {
                "ikm": h(ikm),
                "salt": h(salt),
                "info": h(info),
                "length": length,
                "okm": h(cr.hkdf_sha256(ikm, salt, info, length)),
            }
        )
    for n in (0, 1, 15, 16, 17, 1024):
        key, iv, pt = rb(32), rb(16), rb(n)
        out["aes_cbc"].append(
            {"key": h(key), "iv": h(iv), "plaintext": h(pt), "ciphertext": h(cr.aes_cbc_encrypt(key, iv, pt))}
        )
    for key in keys:
        pub = (int(str(key["n"]), 16), 65537)
        for label, msg in ((session.HEADER_LABEL, rb(72)), (b"", b""), (b"other label", rb(190))):
            if len(msg) > int(str(key["bits"])) // 8 - 66:
                continue
            out["oaep"].append(
                {
                    "key": key["bits"],
                    "label": h(label),
                    "message": h(msg),
                    "ciphertext": h(BACKEND.oaep_encrypt(pub, msg, label, rb(32))),
                }
            )
    return out


BACKEND = SeededBackend()
MODULES = {"wire": wire, "session": session}
Call = tuple  # (function name, argument names, returned field names or an exception name)


def _value(fields: dict[str, object], name: str) -> object:
    if name == "cr":
        return BACKEND
    if name in ("pub", "n"):
        n = int(str(KEYS[int(str(fields["key"]))]["n"]), 16)
        return (n, 65537) if name == "pub" else n
    return fields[name]


def _run(fields: dict[str, object], call: Call) -> dict[str, object]:
    """Runs one call on CPython, checks it gives what the vector will say, and writes it down."""
    fn, args, want = call
    mod, attr = fn.split(".")
    values = [_value(fields, a) for a in args]
    if want.startswith("session.") or want.startswith("wire."):
        exc = getattr(MODULES[want.split(".")[0]], want.split(".")[1])
        try:
            getattr(MODULES[mod], attr)(*values)
        except exc:
            return {"fn": fn, "args": list(args), "raises": want}
        raise AssertionError(fn + " did not raise " + want)
    got = getattr(MODULES[mod], attr)(*values)
    names = want.split()
    expected = fields[names[0]] if len(names) == 1 else tuple(fields[n] for n in names)
    assert (tuple(got) if isinstance(got, tuple) else got) == expected, (fn, got, expected)
    return {"fn": fn, "args": list(args), "returns": names[0] if len(names) == 1 else names}


def vector(
    kind: str,
    fields: dict[str, object],
    make: Call | None,
    read: Call,
    checks: tuple[Call, ...] = (),
    oaep: dict[str, object] | None = None,
) -> dict[str, object]:
    """One frame: its fields, the function that makes it, the one that reads it, other calls.
    Arguments and results name fields ("cr" is the backend, "pub" and "n" the test key)."""
    out: dict[str, object] = {"kind": kind, "fields": {k: _field(v) for k, v in fields.items()}}
    if make:
        out["make"] = _run(fields, make)
    out["read"] = _run(fields, read)
    out["checks"] = [_run(fields, c) for c in checks]
    if oaep:
        out["oaep"] = oaep
    return out


def _field(v: object) -> object:
    return {"hex": h(v)} if isinstance(v, (bytes, bytearray)) else v


def _operation(
    out: list[dict[str, object]], bits: int, service: str, readings: bytes, count: int, paid: int = 0
) -> None:
    """An OPERATION paying `count` coins, and two RESULTs answering it (three with `paid`:
    the analyst's answer saying the bank spent only `paid` of the coins, PROTOCOL.md 5)."""
    coin, op_id, iv, seed = rb(32 * count), rb(16), rb(16), rb(32)
    n = int(str(KEYS[bits]["n"]), 16)
    kid = session.key_id(cr, n)
    _, k_enc, k_mac, frame = session.seal_operation(
        BACKEND, (n, 65537), kid, coin, service, readings, op_id, iv, seed
    )
    f: dict[str, object] = {"key": bits, "coins": count, "coin": coin, "op_id": op_id, "iv": iv, "seed": seed}
    f.update(service=service, kid=kid, service_tag=session.service_tag(cr, service), readings=readings)
    _, _, _, header, ct, tag = wire.decode_operation(frame)
    digest = session.operation_digest(cr, frame)
    f.update(k_enc=k_enc, k_mac=k_mac, header=header, ct=ct, tag=tag, digest=digest, frame=frame)
    f.update(plain=coin + iv + op_id + f["service_tag"], label=session.HEADER_LABEL)
    f.update(other_digest=cr.sha256(b"other readings"))
    out.append(
        vector(
            "operation",
            f,
            (
                "session.seal_operation",
                ("cr", "pub", "kid", "coin", "service", "readings", "op_id", "iv", "seed"),
                "op_id k_enc k_mac frame",
            ),
            ("wire.decode_operation", ("frame",), "op_id kid service header ct tag"),
            (
                ("session.key_id", ("cr", "n"), "kid"),
                ("session.service_tag", ("cr", "service"), "service_tag"),
                ("session.split_header", ("plain",), "coin iv op_id service_tag"),
                ("session.coins_of", ("coin",), "coins"),
                ("session.session_keys", ("cr", "coin", "op_id"), "k_enc k_mac"),
                ("session.open_operation", ("cr", "frame", "k_enc", "k_mac", "iv"), "readings"),
                ("session.operation_digest", ("cr", "frame"), "digest"),
                ("session.operation_tag", ("cr", "k_mac", "digest"), "tag"),
                ("session.check_operation_tag", ("cr", "k_mac", "other_digest", "tag"), "session.InvalidTag"),
                ("session.seal_header", ("cr", "pub", "coin", "iv", "op_id", "service", "seed"), "header"),
            ),
            {"key": bits, "label": "label", "message": "plain", "ciphertext": "header"},
        )
    )
    answer = b'{"service":"' + service.encode() + b'","result":21.5}'
    results = [answer, b""] + ([answer[:-1] + b',"paid":%d}' % paid] if paid else [])
    for result in results:
        riv = rb(16)
        rframe = session.seal_result(cr, op_id, k_enc, k_mac, result, riv)
        rf = {"op_id": op_id, "k_enc": k_enc, "k_mac": k_mac, "iv": riv, "result": result, "frame": rframe}
        out.append(
            vector(
                "result",
                rf,
                ("session.seal_result", ("cr", "op_id", "k_enc", "k_mac", "result", "iv"), "frame"),
                ("session.open_result", ("cr", "frame", "op_id", "k_enc", "k_mac"), "result"),
            )
        )


def messages() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    readings_1k = json.dumps(
        {
            "sensor": "temp0",
            "unit": "C",
            "start": 1795000000,
            "interval": 1.0,
            "values": [round(20 + i / 100, 2) for i in range(170)],
        }
    ).encode()
    for bits, service, readings in (
        (2048, "average", readings_1k),
        (3072, "stats", b"{}"),
        (2048, "a", b"x" * 4096),
    ):
        _operation(out, bits, service, readings, 1)
    for code in wire.ERROR_CODES:
        out.append(_wire_pair("error", {"op_id": rb(16), "code": code}, ("op_id", "code"), "op_id code"))
    for code in wire.STATUS_CODES:
        f = {"op_id": rb(16), "code": code, "price": 1 if code == wire.S_LIVE else 0}
        out.append(_wire_pair("status", f, ("op_id", "code"), "op_id code price"))
    for service in ("average", "x", "a" * 32):
        out.append(
            _wire_pair("query", {"op_id": rb(16), "service": service}, ("op_id", "service"), "op_id service")
        )
    for device, counter, count in (("dev-0001", 1, 10), ("D", 0xFFFFFFFF, 100)):
        _topup(out, device, counter, count)
    # Priced services (drawn last, so the vectors above keep their values): headers paying 2, 3
    # and 4 coins (4 is the most RSA-OAEP-2048 carries), STATUS answers with a price, and a
    # 19-byte STATUS from a gateway before prices, which reads as price 1.
    _operation(out, 2048, "average", readings_1k, 3)
    _operation(out, 2048, "stats", b"{}", 4)
    _operation(out, 3072, "a", b"x" * 100, 2)
    for price in (2, 3, 255):
        f = {"op_id": rb(16), "code": wire.S_LIVE, "price": price}
        out.append(_wire_pair("status", f, ("op_id", "code", "price"), "op_id code price"))
    op_id = rb(16)
    legacy = bytes([wire.VERSION, wire.T_STATUS]) + op_id + bytes([wire.S_LIVE])
    f = {"op_id": op_id, "code": wire.S_LIVE, "price": 1, "frame": legacy}
    out.append(_wire_pair("status", f, None, "op_id code price"))
    # A 3-coin header of which the bank spent 2 (drawn last, like the priced ones above).
    _operation(out, 2048, "average", readings_1k, 3, paid=2)
    return out


def _wire_pair(
    kind: str, f: dict[str, object], make_args: tuple[str, ...] | None, read_returns: str
) -> dict[str, object]:
    """A frame wire alone makes (encode_<kind> of the fields make_args names) and reads
    (decode_<kind>); without make_args the frame is given and only read (e.g. a legacy one)."""
    make = None
    if make_args is not None:
        f["frame"] = getattr(wire, "encode_" + kind)(*(f[a] for a in make_args))
        make = ("wire.encode_" + kind, make_args, "frame")
    return vector(kind, f, make, ("wire.decode_" + kind, ("frame",), read_returns))


def _topup(out: list[dict[str, object]], device: str, counter: int, count: int) -> None:
    """A TOPUP_REQUEST and the TOPUP_RESPONSE answering it."""
    device_key, op_id = rb(32), rb(16)
    _, frame = session.seal_topup_request(cr, device_key, device, counter, count, op_id)
    f = {"device_key": device_key, "device_id": device, "counter": counter, "count": count, "op_id": op_id}
    f.update(frame=frame, wrong_key=bytes(32))
    out.append(
        vector(
            "topup_request",
            f,
            (
                "session.seal_topup_request",
                ("cr", "device_key", "device_id", "counter", "count", "op_id"),
                "op_id frame",
            ),
            ("session.check_topup_request", ("cr", "device_key", "frame"), "op_id device_id counter count"),
            (("session.check_topup_request", ("cr", "wrong_key", "frame"), "session.InvalidTag"),),
        )
    )
    coins, iv, expires = rb(32 * count), rb(16), 1858000000
    rframe = session.seal_topup_response(cr, device_key, op_id, counter, expires, coins, iv)
    r = {"device_key": device_key, "op_id": op_id, "counter": counter, "other_counter": counter - 1}
    r.update(expires=expires, coins=coins, iv=iv, frame=rframe)
    out.append(
        vector(
            "topup_response",
            r,
            (
                "session.seal_topup_response",
                ("cr", "device_key", "op_id", "counter", "expires", "coins", "iv"),
                "frame",
            ),
            (
                "session.open_topup_response",
                ("cr", "device_key", "frame", "op_id", "counter"),
                "expires coins",
            ),
            (
                (
                    "session.open_topup_response",
                    ("cr", "device_key", "frame", "op_id", "other_counter"),
                    "session.InvalidTag",
                ),
            ),
        )
    )


def invalid(op: bytes) -> list[dict[str, str]]:
    """Frames every decoder must refuse, with the decoder, and the words its InvalidFrame
    message must contain."""
    svc_at = wire.PREFIX_LEN + wire.KID_LEN
    hdr_at = svc_at + 1 + op[svc_at]
    cases = [
        ("empty", "operation", b"", "truncated frame"),
        ("prefix only", "operation", op[: wire.PREFIX_LEN], "truncated"),
        ("truncated tag", "operation", op[:-1], "truncated tag"),
        ("truncated ciphertext", "operation", op[: hdr_at + 2 + 256 + 10], "truncated"),
        ("trailing byte", "operation", op + b"\0", "trailing bytes"),
        ("oversized", "operation", op + bytes(wire.FRAME_MAX), "oversized frame"),
        ("version 1", "operation", b"\x01" + op[1:], "unsupported version"),
        ("version 3", "operation", b"\x03" + op[1:], "unsupported version"),
        ("unknown type", "operation", op[:1] + b"\x09" + op[2:], "unknown frame type"),
        ("type zero", "operation", op[:1] + b"\x00" + op[2:], "unknown frame type"),
        ("wrong type", "result", op, "expected frame type"),
        (
            "upper-case service",
            "operation",
            op[: svc_at + 1] + op[svc_at + 1 : svc_at + 2].upper() + op[svc_at + 2 :],
            "service name",
        ),
        ("empty service", "query", b"\x02\x04" + bytes(16) + b"\x00", "service name"),
        ("header length 255", "operation", op[:hdr_at] + b"\x00\xff" + op[hdr_at + 2 :], "bad header length"),
        ("error code 9", "error", b"\x02\x03" + bytes(16) + b"\x09", "unknown code"),
        ("error too long", "error", b"\x02\x03" + bytes(16) + b"\x01\x01", "19 bytes"),
        ("status too long", "status", b"\x02\x05" + bytes(16) + b"\x00\x01\x00", "19 or 20 bytes"),
        ("live status price 0", "status", b"\x02\x05" + bytes(16) + b"\x00\x00", "price"),
        ("unavailable status with a price", "status", b"\x02\x05" + bytes(16) + b"\x02\x01", "price"),
        (
            "counter zero",
            "topup_request",
            b"\x02\x06" + bytes(16) + b"\x01D" + bytes(4) + b"\x00\x01" + bytes(32),
            "bad counter",
        ),
    ]
    return [{"name": n, "read": "wire.decode_" + k, "frame": h(f), "match": m} for n, k, f, m in cases]


def main(out: Path = OUT) -> None:
    """Writes the four files into `out`; the test keys there are kept, the rest is redrawn."""
    rng.seed(SEED)
    out.mkdir(exist_ok=True)
    old = out / "keys.json"  # kept across reruns: only the OAEP seeds are fresh then
    keys = json.loads(old.read_text())["keys"] if old.exists() else [test_key(2048), test_key(3072)]
    KEYS.update({int(str(k["bits"])): k for k in keys})
    prims = primitives(keys)  # drawn first: a new message vector, appended last, changes no other
    msgs = messages()
    first = next(v for v in msgs if v["kind"] == "operation")["fields"]
    files = {
        "keys.json": {"comment": "TEST KEYS ONLY, published on purpose.", "keys": keys},
        "primitives.json": prims,
        "messages.json": {"vectors": msgs},
        "invalid.json": {"frames": invalid(bytes.fromhex(first["frame"]["hex"]))},
    }
    for name, data in files.items():
        (out / name).write_text(json.dumps(data, indent=1) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()

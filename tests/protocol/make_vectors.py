"""Regenerates tests/vectors/*.json on CPython (the `cryptography` backend).

    .venv/bin/python -m tests.protocol.make_vectors

The vectors are data: the tests on both runtimes read them; this script only writes them.
Randomness comes from a seeded generator so a rerun gives the same file, except the OAEP
headers, which `cryptography` always seeds freshly (the checks recover the seed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

OUT = Path(__file__).resolve().parent.parent / "vectors"
rng = random.Random(20261122)


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
                    "ciphertext": h(cr.oaep_encrypt(pub, msg, label)),
                }
            )
    return out


def _operation(
    out: dict[str, list[dict[str, object]]], key: dict[str, object], service: str, readings: bytes, count: int
) -> None:
    """An OPERATION paying `count` coins, and two RESULTs answering it."""
    coin, op_id, iv = rb(32 * count), rb(16), rb(16)
    n = int(str(key["n"]), 16)
    pub = (n, 65537)
    kid = session.key_id(cr, n)
    _, k_enc, k_mac, frame = session.seal_operation(cr, pub, kid, coin, service, readings, op_id, iv)
    out["operation"].append(
        {
            "key": key["bits"],
            "coins": count,
            "coin": h(coin),  # every coin of the header, back to back
            "op_id": h(op_id),
            "iv": h(iv),
            "service": service,
            "kid": h(kid),
            "service_tag": h(session.service_tag(cr, service)),
            "readings": h(readings),
            "k_enc": h(k_enc),
            "k_mac": h(k_mac),
            "digest": h(session.operation_digest(cr, frame)),
            "frame": h(frame),
        }
    )
    for result in (b'{"service":"' + service.encode() + b'","result":21.5}', b""):
        riv = rb(16)
        rframe = session.seal_result(cr, op_id, k_enc, k_mac, result, riv)
        out["result"].append(
            {
                "op_id": h(op_id),
                "k_enc": h(k_enc),
                "k_mac": h(k_mac),
                "iv": h(riv),
                "result": h(result),
                "frame": h(rframe),
            }
        )


def messages(keys: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {
        k: [] for k in ("operation", "result", "error", "status", "query", "topup_request", "topup_response")
    }
    readings_1k = json.dumps(
        {
            "sensor": "temp0",
            "unit": "C",
            "start": 1795000000,
            "interval": 1.0,
            "values": [round(20 + i / 100, 2) for i in range(170)],
        }
    ).encode()
    for key, service, readings in (
        (keys[0], "average", readings_1k),
        (keys[1], "stats", b"{}"),
        (keys[0], "a", b"x" * 4096),
    ):
        _operation(out, key, service, readings, 1)
    for code in wire.ERROR_CODES:
        op_id = rb(16)
        out["error"].append({"op_id": h(op_id), "code": code, "frame": h(wire.encode_error(op_id, code))})
    for code in wire.STATUS_CODES:
        op_id = rb(16)
        out["status"].append(
            {
                "op_id": h(op_id),
                "code": code,
                "price": 1 if code == wire.S_LIVE else 0,
                "frame": h(wire.encode_status(op_id, code)),
            }
        )
    for service in ("average", "x", "a" * 32):
        op_id = rb(16)
        out["query"].append(
            {"op_id": h(op_id), "service": service, "frame": h(wire.encode_query(op_id, service))}
        )
    for device, counter, count in (("dev-0001", 1, 10), ("D", 0xFFFFFFFF, 100)):
        device_key, op_id = rb(32), rb(16)
        _, frame = session.seal_topup_request(cr, device_key, device, counter, count, op_id)
        out["topup_request"].append(
            {
                "device_key": h(device_key),
                "device_id": device,
                "counter": counter,
                "count": count,
                "op_id": h(op_id),
                "frame": h(frame),
            }
        )
        coins, iv, expires = rb(32 * count), rb(16), 1858000000
        rframe = session.seal_topup_response(cr, device_key, op_id, counter, expires, coins, iv)
        out["topup_response"].append(
            {
                "device_key": h(device_key),
                "op_id": h(op_id),
                "counter": counter,
                "expires": expires,
                "coins": h(coins),
                "iv": h(iv),
                "frame": h(rframe),
            }
        )
    # Priced services (drawn last, so the vectors above keep their values): headers paying 2, 3
    # and 4 coins (4 is the most RSA-OAEP-2048 carries), STATUS answers with a price, and a
    # 19-byte STATUS from a gateway before prices, which reads as price 1.
    _operation(out, keys[0], "average", readings_1k, 3)
    _operation(out, keys[0], "stats", b"{}", 4)
    _operation(out, keys[1], "a", b"x" * 100, 2)
    for price in (2, 3, 255):
        op_id = rb(16)
        frame = wire.encode_status(op_id, wire.S_LIVE, price)
        out["status"].append({"op_id": h(op_id), "code": wire.S_LIVE, "price": price, "frame": h(frame)})
    op_id = rb(16)
    legacy = bytes([wire.VERSION, wire.T_STATUS]) + op_id + bytes([wire.S_LIVE])
    out["status"].append(
        {"op_id": h(op_id), "code": wire.S_LIVE, "price": 1, "frame": h(legacy), "decode_only": True}
    )
    return out


def invalid(ops: list[dict[str, object]]) -> list[dict[str, str]]:
    """Frames every decoder must refuse, with the words its InvalidFrame message must contain."""
    op = bytes.fromhex(str(ops[0]["frame"]))
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
    return [{"name": n, "kind": k, "frame": h(f), "match": m} for n, k, f, m in cases]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    old = OUT / "keys.json"  # kept across reruns: only the OAEP seeds are fresh then
    keys = json.loads(old.read_text())["keys"] if old.exists() else [test_key(2048), test_key(3072)]
    msgs = messages(keys)
    files = {
        "keys.json": {"comment": "TEST KEYS ONLY, published on purpose.", "keys": keys},
        "primitives.json": primitives(keys),
        "messages.json": msgs,
        "invalid.json": {"frames": invalid(msgs["operation"])},
    }
    for name, data in files.items():
        (OUT / name).write_text(json.dumps(data, indent=1) + "\n")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()

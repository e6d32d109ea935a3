# Checks tests/vectors/*.json under MicroPython with the device backend (ucrypto), and makes
# fresh vectors for CPython to check. Plain runner, no pytest: pytest runs this file under the
# real MicroPython unix port (tests/protocol/test_micropython.py) and reads its output.
#
#   micropython mp_vectors.py check VECTOR_DIR   -> one line per check, then "N passed, M failed"
#   micropython mp_vectors.py make  OUT_FILE     -> writes vectors made on MicroPython
import json
import sys
from binascii import hexlify, unhexlify

import session
import ucrypto as cr
import wire

passed = 0
failed = 0


def check(name, fn, *args):
    global passed, failed
    try:
        fn(*args)
        passed += 1
    except Exception as exc:  # report and go on: one line per failed check
        failed += 1
        print("FAIL", name, type(exc).__name__, exc)


def eq(got, want, what):
    if bytes(got) != bytes(want):
        raise AssertionError(what + " differs")


def x(s):
    return unhexlify(s)


def load(vdir, name):
    with open(vdir + "/" + name) as f:
        return json.load(f)


def rsa_key(keys, bits):
    for k in keys:
        if k["bits"] == bits:
            return int(k["n"], 16), int(k["d"], 16)
    raise KeyError(bits)


def oaep_seed(n, d, ciphertext, label):
    """Recovers the OAEP seed of a ciphertext with the test private key (test-only code)."""
    k = len(ciphertext)
    em = bytearray(pow(int.from_bytes(ciphertext, "big"), d, n).to_bytes(k, "big"))
    cr._mgf1_xor(em, 1, 32, bytes(em[33:]))  # unmask the seed with MGF1(maskedDB)
    seed = bytes(em[1:33])
    cr._mgf1_xor(em, 33, k - 33, seed)
    eq(em[33:65], cr.sha256(label), "label hash")
    db = em[65:]  # PS (zeros) | 0x01 | message
    return seed, bytes(db[bytes(db).index(b"\x01") + 1 :])


def check_primitives(p, keys):
    for v in p["sha256"]:
        check("sha256", lambda v: eq(cr.sha256(x(v["data"])), x(v["digest"]), "digest"), v)
    for v in p["hmac"]:
        check("hmac", lambda v: eq(cr.hmac_sha256(x(v["key"]), x(v["data"])), x(v["mac"]), "mac"), v)
    for v in p["hkdf"]:
        check(
            "hkdf",
            lambda v: eq(
                cr.hkdf_sha256(x(v["ikm"]), x(v["salt"]), x(v["info"]), v["length"]), x(v["okm"]), "okm"
            ),
            v,
        )

    def aes(v):
        eq(cr.aes_cbc_encrypt(x(v["key"]), x(v["iv"]), x(v["plaintext"])), x(v["ciphertext"]), "ct")
        eq(cr.aes_cbc_decrypt(x(v["key"]), x(v["iv"]), x(v["ciphertext"])), x(v["plaintext"]), "pt")

    for v in p["aes_cbc"]:
        check("aes_cbc", aes, v)

    def oaep(v):
        n, d = rsa_key(keys, v["key"])
        ct, label, msg = x(v["ciphertext"]), x(v["label"]), x(v["message"])
        seed, _ = oaep_seed(n, d, ct, label)
        # The device's encryption, given CPython's seed, must give CPython's ciphertext.
        eq(cr.oaep_encrypt((n, 65537), msg, label, seed), ct, "ciphertext")

    for v in p["oaep"]:
        check("oaep", oaep, v)


def check_operation(v, keys):
    n, d = rsa_key(keys, v["key"])
    frame = x(v["frame"])
    op_id, kid, service, header, ct, tag = wire.decode_operation(frame)
    eq(op_id, x(v["op_id"]), "op_id")
    eq(kid, session.key_id(cr, n), "kid")
    if service != v["service"]:
        raise AssertionError("service")
    k_enc, k_mac = session.session_keys(cr, x(v["coin"]), op_id)
    eq(k_enc, x(v["k_enc"]), "k_enc")
    eq(k_mac, x(v["k_mac"]), "k_mac")
    eq(session.open_operation(cr, frame, k_enc, k_mac, x(v["iv"])), x(v["readings"]), "readings")
    digest = session.operation_digest(cr, frame)
    eq(digest, x(v["digest"]), "digest")
    eq(session.operation_tag(cr, k_mac, digest), tag, "tag over the digest")
    seed, plain = oaep_seed(n, d, header, session.HEADER_LABEL)
    eq(plain, x(v["coin"]) + x(v["iv"]) + op_id + x(v["service_tag"]), "header plaintext")
    if session.coins_of(x(v["coin"])) != v["coins"] or len(plain) > 190:
        raise AssertionError("coins in the header")
    eq(session.seal_header(cr, (n, 65537), x(v["coin"]), x(v["iv"]), op_id, service, seed), header, "header")
    again = session.seal_operation(
        cr, (n, 65537), kid, x(v["coin"]), service, x(v["readings"]), op_id, x(v["iv"]), seed
    )[3]
    eq(again, frame, "resealed frame")


def check_messages(m, keys):
    for v in m["operation"]:
        check("operation", check_operation, v, keys)

    def result(v):
        args = (x(v["op_id"]), x(v["k_enc"]), x(v["k_mac"]))
        eq(session.open_result(cr, x(v["frame"]), *args), x(v["result"]), "result")
        eq(session.seal_result(cr, *args, x(v["result"]), x(v["iv"])), x(v["frame"]), "frame")

    for v in m["result"]:
        check("result", result, v)

    def error(v):
        eq(wire.encode_error(x(v["op_id"]), v["code"]), x(v["frame"]), "frame")
        if wire.decode_error(x(v["frame"])) != (x(v["op_id"]), v["code"]):
            raise AssertionError("decoded fields")

    def status(v):
        if not v.get("decode_only"):
            eq(wire.encode_status(x(v["op_id"]), v["code"], v["price"] or 1), x(v["frame"]), "frame")
        if wire.decode_status(x(v["frame"])) != (x(v["op_id"]), v["code"], v["price"]):
            raise AssertionError("decoded fields (price)")

    for v in m["error"]:
        check("error", error, v)
    for v in m["status"]:
        check("status", status, v)

    def query(v):
        eq(wire.encode_query(x(v["op_id"]), v["service"]), x(v["frame"]), "frame")
        if wire.decode_query(x(v["frame"]))[1] != v["service"]:
            raise AssertionError("service")

    for v in m["query"]:
        check("query", query, v)

    def topup_request(v):
        _, frame = session.seal_topup_request(
            cr, x(v["device_key"]), v["device_id"], v["counter"], v["count"], x(v["op_id"])
        )
        eq(frame, x(v["frame"]), "frame")
        got = session.check_topup_request(cr, x(v["device_key"]), frame)
        if got[1:] != (v["device_id"], v["counter"], v["count"]):
            raise AssertionError("fields")

    def topup_response(v):
        key, op_id = x(v["device_key"]), x(v["op_id"])
        frame = session.seal_topup_response(
            cr, key, op_id, v["counter"], v["expires"], x(v["coins"]), x(v["iv"])
        )
        eq(frame, x(v["frame"]), "frame")
        expires, coins = session.open_topup_response(cr, key, frame, op_id, v["counter"])
        eq(coins, x(v["coins"]), "coins")
        if expires != v["expires"]:
            raise AssertionError("expires")

    for v in m["topup_request"]:
        check("topup_request", topup_request, v)
    for v in m["topup_response"]:
        check("topup_response", topup_response, v)


DECODERS = {
    "operation": wire.decode_operation,
    "result": wire.decode_result,
    "error": wire.decode_error,
    "status": wire.decode_status,
    "query": wire.decode_query,
    "topup_request": wire.decode_topup_request,
    "topup_response": wire.decode_topup_response,
}


def check_invalid(inv):
    def refuse(v):
        try:
            DECODERS[v["kind"]](x(v["frame"]))
        except wire.InvalidFrame as exc:
            if v["match"] not in str(exc):
                raise AssertionError("message " + repr(str(exc))) from None
            return
        raise AssertionError("accepted")

    for v in inv["frames"]:
        check("invalid " + v["name"], refuse, v)


def check_bit_flips(m):
    """Every single-bit flip of an operation and of a result must be rejected."""
    v = m["operation"][0]
    k_enc, k_mac, iv = x(v["k_enc"]), x(v["k_mac"]), x(v["iv"])
    r = m["result"][0]
    rargs = (x(r["op_id"]), x(r["k_enc"]), x(r["k_mac"]))

    def flips(frame, opener):
        buf = bytearray(frame)
        for i in range(len(buf) * 8):
            buf[i >> 3] ^= 1 << (i & 7)
            try:
                opener(buf)
                raise AssertionError("flip accepted at bit " + str(i))
            except (wire.InvalidFrame, session.InvalidTag):
                pass
            buf[i >> 3] ^= 1 << (i & 7)

    check(
        "bit flips operation", flips, x(v["frame"]), lambda b: session.open_operation(cr, b, k_enc, k_mac, iv)
    )
    check("bit flips result", flips, x(r["frame"]), lambda b: session.open_result(cr, b, *rargs))


def make(out):
    """Fresh vectors made on the device backend, for CPython to check."""
    with open(sys.argv[3]) as f:
        keys = json.load(f)["keys"]
    n = int(keys[0]["n"], 16)
    pub = (n, 65537)
    kid = session.key_id(cr, n)
    coin = cr.random(32)
    readings = b'{"sensor":"t","unit":"C","start":0,"interval":1,"values":[1,2,3.5]}'
    op_id, k_enc, k_mac, frame = session.seal_operation(cr, pub, kid, coin, "average", readings)
    rframe = session.seal_result(cr, op_id, k_enc, k_mac, b'{"service":"average","result":2.1}')
    dkey = cr.random(32)
    t_op, treq = session.seal_topup_request(cr, dkey, "dev-7", 7, 3)
    tresp = session.seal_topup_response(cr, dkey, t_op, 7, 1858000000, cr.random(96))
    h = lambda b: hexlify(b).decode()  # noqa: E731
    doc = {
        "key_bits": keys[0]["bits"],
        "coin": h(coin),
        "op_id": h(op_id),
        "readings": h(readings),
        "operation": h(frame),
        "result": h(rframe),
        "device_key": h(dkey),
        "topup_op_id": h(t_op),
        "topup_request": h(treq),
        "topup_response": h(tresp),
        "sha256": h(cr.sha256(readings)),
        "hmac": h(cr.hmac_sha256(coin, readings)),
        "hkdf": h(cr.hkdf_sha256(coin, op_id, b"info", 80)),
        "aes_cbc": h(cr.aes_cbc_encrypt(k_enc, op_id, readings)),
        "oaep_empty": h(cr.oaep_encrypt(pub, b"", b"")),
    }
    with open(out, "w") as f:
        json.dump(doc, f)
    print("made", out)


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
        return
    vdir = sys.argv[2]
    keys = load(vdir, "keys.json")["keys"]
    check_primitives(load(vdir, "primitives.json"), keys)
    m = load(vdir, "messages.json")
    check_messages(m, keys)
    check_invalid(load(vdir, "invalid.json"))
    check_bit_flips(m)
    print(str(passed) + " passed, " + str(failed) + " failed")


main()

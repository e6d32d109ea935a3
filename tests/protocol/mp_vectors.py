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


MODULES = {"wire": wire, "session": session}


def function(name):
    module, attr = name.split(".")
    return getattr(MODULES[module], attr)


def value(v, name, keys):
    """An argument or a result, named as the vector names it ("cr" is the device backend)."""
    if name == "cr":
        return cr
    if name in ("pub", "n"):
        n = rsa_key(keys, v["fields"]["key"])[0]
        return (n, 65537) if name == "pub" else n
    field = v["fields"][name]
    return x(field["hex"]) if isinstance(field, dict) else field


def plain(got):
    if isinstance(got, (bytearray, memoryview)):
        return bytes(got)
    if isinstance(got, (tuple, list)):
        return tuple(plain(g) for g in got)
    return got


def run(v, call, keys):
    args = [value(v, a, keys) for a in call["args"]]
    if "raises" in call:
        try:
            function(call["fn"])(*args)
        except function(call["raises"]):
            return
        raise AssertionError(call["fn"] + " did not raise " + call["raises"])
    want = call["returns"]
    if isinstance(want, list):
        expected = tuple(value(v, n, keys) for n in want)
    else:
        expected = value(v, want, keys)
    if plain(function(call["fn"])(*args)) != expected:
        raise AssertionError(call["fn"] + " differs")


def check_message(v, keys):
    """Every frame kind the same way: made, read and checked by the functions its vector names."""
    calls = ([v["make"]] if "make" in v else []) + [v["read"]] + v["checks"]
    for call in calls:
        run(v, call, keys)
    if "oaep" in v:
        o = v["oaep"]
        n, d = rsa_key(keys, o["key"])
        ct, label = value(v, o["ciphertext"], keys), value(v, o["label"], keys)
        seed, message = oaep_seed(n, d, ct, label)
        eq(message, value(v, o["message"], keys), "header plaintext")
        eq(cr.oaep_encrypt((n, 65537), message, label, seed), ct, "header")


def check_messages(m, keys):
    for v in m["vectors"]:
        check(v["kind"], check_message, v, keys)


def check_invalid(inv):
    def refuse(v):
        try:
            function(v["read"])(x(v["frame"]))
        except wire.InvalidFrame as exc:
            if v["match"] not in str(exc):
                raise AssertionError("message " + repr(str(exc))) from None
            return
        raise AssertionError("accepted")

    for v in inv["frames"]:
        check("invalid " + v["name"], refuse, v)


def first(m, kind):
    """The decoded fields of the first vector of a kind."""
    for v in m["vectors"]:
        if v["kind"] == kind:
            return {k: x(f["hex"]) if isinstance(f, dict) else f for k, f in v["fields"].items()}
    raise KeyError(kind)


def check_bit_flips(m):
    """Every single-bit flip of an operation and of a result must be rejected."""
    v = first(m, "operation")
    k_enc, k_mac, iv = v["k_enc"], v["k_mac"], v["iv"]
    r = first(m, "result")
    rargs = (r["op_id"], r["k_enc"], r["k_mac"])

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

    check("bit flips operation", flips, v["frame"], lambda b: session.open_operation(cr, b, k_enc, k_mac, iv))
    check("bit flips result", flips, r["frame"], lambda b: session.open_result(cr, b, *rargs))


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

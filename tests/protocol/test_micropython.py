"""The same vectors under the real MicroPython unix port, and vectors made there checked here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

from .conftest import PROTOCOL_SRC, VECTORS, micropython, private_key

HERE = Path(__file__).resolve().parent


def run_mp(*args: str, heap: str = "4M", path: Path = PROTOCOL_SRC) -> str:
    proc = subprocess.run(
        [micropython(), "-X", f"heapsize={heap}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"MICROPYPATH": str(path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_cpython_vectors_verify_under_micropython():
    out = run_mp(str(HERE / "mp_vectors.py"), "check", str(VECTORS))
    assert "FAIL" not in out, out
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m, out
    counts = json.loads((VECTORS / "primitives.json").read_text())
    msgs = json.loads((VECTORS / "messages.json").read_text())
    invalid = json.loads((VECTORS / "invalid.json").read_text())["frames"]
    expected = (
        sum(len(v) for v in counts.values())
        + len(msgs["vectors"])
        + len(invalid)
        + 2  # the two bit-flip sweeps
    )
    assert (int(m.group(1)), int(m.group(2))) == (expected, 0)


def test_micropython_vectors_verify_on_cpython(tmp_path):
    out_file = tmp_path / "mp.json"
    run_mp(str(HERE / "mp_vectors.py"), "make", str(out_file), str(VECTORS / "keys.json"))
    v = {
        k: (bytes.fromhex(s) if isinstance(s, str) else s)
        for k, s in json.loads(out_file.read_text()).items()
    }
    key = private_key(v["key_bits"])
    op_id, kid, service, header, _ct, _tag = wire.decode_operation(v["operation"])
    coin, iv, h_op, s_tag = session.split_header(key.decrypt(header, cr.oaep(session.HEADER_LABEL)))
    assert (coin, h_op, s_tag, service) == (v["coin"], op_id, session.service_tag(cr, "average"), "average")
    assert kid == session.key_id(cr, key.public_key().public_numbers().n)
    k_enc, k_mac = session.session_keys(cr, coin, op_id)
    assert session.open_operation(cr, v["operation"], k_enc, k_mac, iv) == v["readings"]
    assert session.open_result(cr, v["result"], op_id, k_enc, k_mac) == b'{"service":"average","result":2.1}'
    dkey = v["device_key"]
    assert session.check_topup_request(cr, dkey, v["topup_request"])[1:] == ("dev-7", 7, 3)
    assert session.open_topup_response(cr, dkey, v["topup_response"], v["topup_op_id"], 7)[0] == 1858000000
    assert cr.sha256(v["readings"]) == v["sha256"]
    assert cr.hmac_sha256(coin, v["readings"]) == v["hmac"]
    assert cr.hkdf_sha256(coin, op_id, b"info", 80) == v["hkdf"]
    assert cr.aes_cbc_decrypt(k_enc, op_id, v["aes_cbc"]) == v["readings"]
    assert key.decrypt(v["oaep_empty"], cr.oaep(b"")) == b""


def test_device_builds_an_operation_from_mpy_within_a_64k_heap(tmp_path):
    """The shared modules, compiled with mpy-cross as they are deployed, run in a board-sized heap."""
    mpy_cross = Path(micropython()).with_name("mpy-cross")
    for name in ("wire", "session", "ucrypto"):
        subprocess.run(
            [str(mpy_cross), "-o", str(tmp_path / f"{name}.mpy"), str(PROTOCOL_SRC / f"{name}.py")],
            check=True,
        )
    n = private_key(2048).public_key().public_numbers().n
    script = tmp_path / "one_op.py"
    script.write_text(
        "import ucrypto as cr, session, wire\n"
        f"n = {n}\n"
        "op, ke, km, f = session.seal_operation(cr, (n, 65537), session.key_id(cr, n), cr.random(32),"
        " 'average', b'x' * 1024)\n"
        "print(len(f), wire.decode_operation(f)[2])\n"
    )
    out = run_mp(str(script), heap="64K", path=tmp_path)
    assert out.split() == [str(18 + 8 + 1 + 7 + 2 + 256 + 2 + 1040 + 32), "average"]


@pytest.mark.slow
def test_vectors_of_the_device_side_verify_on_the_devices_trimmed_copy(tmp_path):
    """The modules as deployed (service side blanked, names shortened, .mpy) pass every
    vector that uses only the device side; the others fail only for want of a service-side
    function."""
    from ecoin.tools.provisioning import trim
    from ecoin.tools.provisioning.deploy import install_firmware

    # the runner and the functions the vectors name keep their names; shortening the rest
    # changes nothing else (shrink checks it)
    texts = [f.read_text() for f in VECTORS.glob("*.json")]
    called = {fn for t in texts for fn in re.findall(r'"(?:wire|session)\.(\w+)"', t)}
    keep = [(HERE / "mp_vectors.py").read_text(), "\n".join(sorted(called))]
    install_firmware(tmp_path, "sim", mpy=True, keep=keep)
    out = run_mp(str(HERE / "mp_vectors.py"), "check", str(VECTORS), path=tmp_path)
    service = {f"{mod}.{fn}" for mod, fns in trim.service_side() for fn in fns}
    bare = {fn for mod, fns in trim.service_side() for fn in fns}
    fails = re.findall(r"^FAIL (.+?) (\w+Error) (.*)$", out, re.M)
    for what, exc, msg in fails:
        missing = re.search(r"has no attribute '(\w+)'", msg)
        assert exc == "AttributeError" and missing and missing.group(1) in bare, (what, exc, msg)
    msgs = json.loads((VECTORS / "messages.json").read_text())["vectors"]
    calls = [([v["make"]] if "make" in v else []) + [v["read"]] + v["checks"] for v in msgs]
    needs = [c for c in calls if any(call["fn"] in service for call in c)]
    kinds = {v["kind"] for v in msgs}
    assert sum(what in kinds for what, _, _ in fails) == len(needs) < len(msgs)
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m and int(m.group(2)) == len(fails) and int(m.group(1)) > len(msgs) - len(needs)


def test_modulus_length_and_the_room_let_go_for_the_rsa_step(tmp_path):
    """ucrypto.modulus_len, remembered for the last modulus, is right for every one in turn;
    oaep_encrypt lets go of the room a sealer holds for it (ucrypto.room) and still encrypts
    as before."""
    n = private_key(2048).public_key().public_numbers().n
    script = tmp_path / "room.py"
    script.write_text(
        "import ucrypto as cr\n"
        "got = [cr.modulus_len(1 << (b - 1)) for b in (1, 8, 9, 2047, 2048, 2049, 3072, 4096, 8184)]\n"
        "got += [cr.modulus_len((1 << b) - 1) for b in (8, 2048, 2048, 3072)]\n"
        "print(' '.join(str(k) for k in got))\n"
        f"n = {n}\n"
        "seed = bytes(range(32))\n"
        "plain = cr.oaep_encrypt((n, 65537), b'm', b'l', seed)\n"
        "cr.room = bytearray(3072)\n"
        "print(cr.oaep_encrypt((n, 65537), b'm', b'l', seed) == plain, cr.room)\n"
    )
    out = run_mp(str(script), heap="256K").split("\n")
    assert out[0].split() == [str(k) for k in (1, 1, 2, 256, 256, 257, 384, 512, 1023, 1, 256, 256, 384)]
    assert out[1] == "True None"

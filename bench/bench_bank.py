"""Bank throughput and storage, measured against a real bank process over mutual TLS.

Figures:
- rsa2048_private_per_s: `openssl speed -seconds 3 rsa2048`, private-key operations per
  second on one core, in this same run: the ceiling for decrypting coin headers.
- bank_redeem_per_s: best sustained durable redemptions per second (SQLite, synchronous=FULL,
  one transaction per batch of 256) from a separate load process over mTLS, with a few
  connections in parallel; the best of ROUNDS rounds.
- bank_redeem_unbatched_per_s: the same with one header per request.
- bank_redeem_vs_rsa: bank_redeem_per_s / rsa2048_private_per_s (target >= 0.5).
- bank_bytes_per_coin: SQLite file bytes per outstanding coin with 1,000,000 coins
  outstanding, minted through the ledger's own bulk path (target <= 40).
- bank_fairness_ratio: a well-behaved analyst's p99 time to redeem one header while another
  analyst floods the bank with 256-header batches of junk on FLOOD_CONNECTIONS connections,
  divided by its p99 alone (target <= 3), alone and flooded alternating in FAIR_PHASES
  phases. Junk costs a private-key operation per header.
- bank_fair_p99_alone_ms, bank_fair_p99_flood_ms: the two p99s.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecoin.bank.keys import Opener
from ecoin.bank.ledger import Ledger
from ecoin.bank.sqlite import SqliteStore
from ecoin.bank.vault import Vault, create_master_key
from ecoin.common import crypto
from ecoin.common.bank_client import BankClient, RedeemItem
from ecoin.protocol import session
from ecoin.testing.bank import BankProcess
from ecoin.tools import pki as pki_tool

BATCH = 256
BATCHED_COINS = 15_360  # 60 batches per round
UNBATCHED_COINS = 3_000
ROUNDS = 3
CONNECTIONS = 4
MILLION = 1_000_000
FAIR_SAMPLES = 200
FLOOD_CONNECTIONS = 4
FAIR_PHASES = 4
DEVICE_KEY = bytes(32)


def rsa_private_per_s() -> float:
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "3", "rsa2048"], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("rsa") and "2048" in line and i > 0 and "sign/s" in lines[i - 1]:
            header = lines[i - 1].split()
            values = line.split("bits", 1)[1].split()
            return float(values[header.index("sign/s")])
    raise RuntimeError(f"cannot parse `openssl speed` output:\n{out}")


# The load process: builds every header first, then times the redemptions alone.

Headers = Callable[[tuple[int, int], bytes, list[bytes]], list[RedeemItem]]


def v2_headers(public: tuple[int, int], kid: bytes, coins: list[bytes]) -> list[RedeemItem]:
    """Redemption items as an analyst sends them: the header as a device seals it, and a tag
    over a digest (random here: the bank never sees the frame the digest stands for)."""
    items = []
    for coin in coins:
        op_id, iv, digest = os.urandom(16), os.urandom(16), os.urandom(32)
        header = session.seal_header(crypto, public, coin, iv, op_id, "average")
        tag = session.operation_tag(crypto, session.session_keys(crypto, coin, op_id)[1], digest)
        items.append(RedeemItem(kid, header, op_id, "average", digest, tag))
    return items


def _load(args: dict[str, Any], out: Any) -> None:
    items = args.get("headers", v2_headers)(args["public"], args["kid"], args["coins"])
    size, conns = args["batch"], args["connections"]
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    clients = [BankClient(args["url"], *args["tls"], timeout=120) for _ in range(conns)]
    for c in clients:
        c.healthz()  # handshakes before the clock starts
    ok = [0] * conns

    def work(k: int) -> None:
        for chunk in chunks[k::conns]:
            ok[k] += sum(r.ok for r in clients[k].redeem(chunk))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(conns)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in clients:
        c.close()
    out.put((sum(ok), elapsed))


def redeem_rate(
    bank: BankProcess, coins: list[bytes], w: Any, batch: int, connections: int, headers: Headers = v2_headers
) -> float:
    """``headers`` builds the items (another protocol version's, say: bench_bank_vs_base)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    tls = tuple(str(bank.pki / "analyst" / f"alice.{ext}") for ext in ("crt", "key")) + (
        str(bank.pki / "ca.crt"),
    )
    args = {"url": bank.url, "tls": tls, "public": w.public_key, "kid": w.kid, "coins": coins}
    args |= {"headers": headers, "batch": batch, "connections": connections}
    proc = ctx.Process(target=_load, args=(args, out))
    proc.start()
    ok, elapsed = out.get(timeout=600)
    proc.join()
    if ok != len(coins):
        raise RuntimeError(f"only {ok} of {len(coins)} redemptions succeeded")
    return ok / elapsed


def _flood(args: dict[str, Any], go: Any, stop: Any, busy: Any, answered: Any) -> None:
    """Another analyst's junk: batches of random headers under a real kid, as fast as the
    bank answers them, on several connections, while ``go`` is set; ``busy`` counts the
    batches at the bank, ``answered`` those answered."""
    clients = [BankClient(args["url"], *args["tls"], timeout=120) for _ in range(FLOOD_CONNECTIONS)]
    junk = [
        RedeemItem(args["kid"], os.urandom(256), os.urandom(16), "average", os.urandom(32), os.urandom(32))
        for _ in range(BATCH)
    ]

    def work(client: BankClient) -> None:
        client.healthz()
        while not stop.is_set():
            if not go.wait(0.1):
                continue
            with busy.get_lock():
                busy.value += 1
            try:
                client.redeem(junk)
            finally:
                with busy.get_lock():
                    busy.value -= 1
                    answered.value += 1

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _times(bank: BankProcess, items: list[RedeemItem]) -> list[float]:
    times = []
    with bank.client("analyst", "alice") as alice:
        alice.healthz()
        for item in items:
            started = time.perf_counter()
            if not alice.redeem([item])[0].ok:
                raise RuntimeError("a valid header was refused")
            times.append(time.perf_counter() - started)
    return times


def _p99(times: list[float]) -> float:
    times = sorted(times)
    return times[int(len(times) * 0.99) - 1]


def _until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def fairness(bank: BankProcess) -> tuple[float, float]:
    """(p99 alone, p99 during the flood), in seconds. Alone and flooded alternate in
    FAIR_PHASES phases, so that the machine's other load weighs on both alike."""
    coins, w = withdraw(bank, 2 * FAIR_SAMPLES)
    items = v2_headers(w.public_key, w.kid, coins)
    ctx = multiprocessing.get_context("spawn")
    go, stop = ctx.Event(), ctx.Event()
    busy, answered = ctx.Value("i", 0), ctx.Value("i", 0)
    base = bank.pki / "analyst" / "bob"
    tls = (f"{base}.crt", f"{base}.key", str(bank.pki / "ca.crt"))
    args = ({"url": bank.url, "tls": tls, "kid": w.kid}, go, stop, busy, answered)
    proc = ctx.Process(target=_flood, args=args)
    proc.start()
    alone: list[float] = []
    flooded: list[float] = []
    n = FAIR_SAMPLES // FAIR_PHASES
    try:
        for phase in range(FAIR_PHASES):
            _until(lambda: busy.value == 0, "the flood to pause")
            alone += _times(bank, items[2 * phase * n : (2 * phase + 1) * n])
            seen = answered.value
            go.set()  # the bank's queues are full once every connection had a batch answered
            _until(lambda seen=seen: answered.value >= seen + FLOOD_CONNECTIONS, "the flood")
            flooded += _times(bank, items[(2 * phase + 1) * n : (2 * phase + 2) * n])
            go.clear()
    finally:
        stop.set()
        go.clear()
        proc.join(120)
    return _p99(alone), _p99(flooded)


def withdraw(bank: BankProcess, n: int) -> tuple[list[bytes], Any]:
    coins: list[bytes] = []
    with bank.client("owner", "olive") as olive:
        while len(coins) < n:
            w = olive.withdraw("dev1", min(10_000, n - len(coins)))
            coins += w.coins
    return coins, w


def bytes_per_coin(workdir: Path, pki_dir: Path) -> float:
    create_master_key(workdir / "master.key")
    store = SqliteStore(workdir / "million.sqlite3")
    store.init()
    ledger = Ledger(store, Vault.load(workdir / "master.key"), Opener(pki_dir, 0))
    ledger.create_account("olive", "owner")
    ledger.fund("olive", MILLION)
    ledger.register_device("olive", "dev1", DEVICE_KEY)
    ledger.withdraw("olive", "dev1", MILLION, "bulk")  # one batch, sorted insert
    store.checkpoint()
    size = store.size_bytes()
    outstanding = store.run(
        lambda tx: tx.q("SELECT COUNT(*) FROM coins WHERE state = 0").fetchone()[0], False
    )
    store.close()
    return size / outstanding


def run(workdir: Path) -> dict[str, float | int | str]:
    pki_dir = workdir / "pki"
    pki_tool.init(pki_dir)
    pki_tool.issue(pki_dir, "analyst", "alice")
    pki_tool.issue(pki_dir, "analyst", "bob")
    pki_tool.issue(pki_dir, "owner", "olive")
    rsa_rate = rsa_private_per_s()
    figures: dict[str, float | int | str] = {"rsa2048_private_per_s": round(rsa_rate, 1)}
    with BankProcess(workdir / "bank", pki_dir, workers=-1, metrics_port=0, expire_every_s=0) as bank:
        bank.admin.create_account("olive", "owner")
        bank.admin.create_account("alice", "analyst", ["average"])
        bank.admin.create_account("bob", "analyst", ["average"])
        bank.admin.fund("olive", ROUNDS * BATCHED_COINS + UNBATCHED_COINS + 2 * FAIR_SAMPLES)
        with bank.client("owner", "olive") as olive:
            olive.register_device("dev1", DEVICE_KEY)
        best = 0.0
        for _ in range(ROUNDS):
            coins, w = withdraw(bank, BATCHED_COINS)
            best = max(best, redeem_rate(bank, coins, w, BATCH, CONNECTIONS))
        coins, w = withdraw(bank, UNBATCHED_COINS)
        single = redeem_rate(bank, coins, w, 1, 2 * CONNECTIONS)
        alone, flooded = fairness(bank)
        if bank.cli("audit", check=False).returncode != 0:
            raise RuntimeError("the bank's audit failed after the load")
    figures["bank_redeem_per_s"] = round(best, 1)
    figures["bank_redeem_unbatched_per_s"] = round(single, 1)
    figures["bank_redeem_vs_rsa"] = round(best / rsa_rate, 3)
    figures["bank_fairness_ratio"] = round(flooded / alone, 2)
    figures["bank_fair_p99_alone_ms"] = round(alone * 1000, 2)
    figures["bank_fair_p99_flood_ms"] = round(flooded * 1000, 2)
    figures["bank_bytes_per_coin"] = round(bytes_per_coin(workdir, pki_dir), 2)
    return figures


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=1))

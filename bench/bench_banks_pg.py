"""Two bank processes on one PostgreSQL ledger against one, side by side in one run.

The bank scales out by running more processes on one database (docs/SCALING.md): each has
its own RSA workers and request threads, and PostgreSQL serialises the spends (a coin is
spent once whichever bank sees it, as tests/bank/test_bank_concurrency.py shows). This
bench measures what that buys on this machine: durable redemptions per second with one bank
process and with two, on the same PostgreSQL cluster, alternated ROUNDS times (best of
each), each bank loaded like bench_bank (batches of 256 on CONNECTIONS connections, from its
own load process; both loads start together on a signal).

Figures:
- banks_pg_1x_redeem_per_s, banks_pg_2x_redeem_per_s: redemptions per second, one bank and
  two banks (the sum of both, over the time both loads ran);
- banks_pg_2x_vs_1x: their ratio. On a machine whose cores the banks' RSA already fills, it
  stays near 1: the limit is then the CPU, not the shared ledger;
- banks_pg_cpu_ms_<part>: CPU per redemption, in the two-bank rounds, of the banks (their
  RSA workers included) and of PostgreSQL: where the next core should go;
- banks_pg_loadavg: the 1-minute load average at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ecoin.common.bank_client import BankClient
from ecoin.testing.bank import BankProcess
from ecoin.testing.servers import postgres
from ecoin.tools import pki as pki_tool

from . import cputime
from .bench_bank import DEVICE_KEY, v2_headers, withdraw

BATCH = 256
COINS = 7_680  # per bank and round: 30 batches
CONNECTIONS = 4
ROUNDS = 2


def _load(args: dict[str, Any], ready: Any, go: Any, out: Any) -> None:
    """One bank's load: headers built first, then redeemed on CONNECTIONS connections."""
    items = v2_headers(args["public"], args["kid"], args["coins"])
    chunks = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    cert, key, ca = args["tls"]
    clients = [BankClient(args["url"], cert, key, ca, timeout=120) for _ in range(CONNECTIONS)]
    for c in clients:
        c.healthz()
    ok = [0] * CONNECTIONS

    def work(k: int) -> None:
        for chunk in chunks[k::CONNECTIONS]:
            ok[k] += sum(r.ok for r in clients[k].redeem(chunk))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(CONNECTIONS)]
    ready.put(1)
    go.wait(120)
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(ok), started, time.perf_counter()))
    for c in clients:
        c.close()


def _round(banks: list[BankProcess], cpu_of: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Redemptions per second of all ``banks`` loaded at once, and CPU seconds by part."""
    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    total = 0
    for bank in banks:
        coins, w = withdraw(bank, COINS)
        total += len(coins)
        base = bank.pki / "analyst" / "alice"
        tls = (f"{base}.crt", f"{base}.key", str(bank.pki / "ca.crt"))
        args = {"url": bank.url, "tls": tls, "public": w.public_key, "kid": w.kid, "coins": coins}
        procs.append(ctx.Process(target=_load, args=(args, ready, go, out)))
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    cpu_before = {k: cputime.tree(pid) for k, pid in cpu_of.items()}
    go.set()
    answers = [out.get(timeout=600) for _ in procs]
    cpu = {k: cputime.tree(pid) - cpu_before[k] for k, pid in cpu_of.items()}
    for p in procs:
        p.join()
    ok = sum(a[0] for a in answers)
    if ok != total:
        raise RuntimeError(f"only {ok} of {total} redemptions succeeded")
    elapsed = max(a[2] for a in answers) - min(a[1] for a in answers)
    return ok / elapsed, cpu


def _share_master_key(one: BankProcess, two: BankProcess) -> None:
    """Both banks derive coins and unwrap device keys with one master key."""
    one.cli("init")
    two.workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(two.workdir / "master.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (one.workdir / "master.key").read_bytes())
    os.close(fd)


def run(workdir: Path) -> dict[str, float | int | str]:
    pki_dir = workdir / "pki"
    pki_tool.init(pki_dir)
    pki_tool.issue(pki_dir, "analyst", "alice")
    pki_tool.issue(pki_dir, "owner", "olive")
    pg_dir = Path(tempfile.mkdtemp(prefix="ecoin-bench-pg-"))  # not under a root-only tree: runs as postgres
    try:
        return _measure(pki_dir, workdir, pg_dir)
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


def _measure(pki_dir: Path, workdir: Path, pg_dir: Path) -> dict[str, float | int | str]:
    with postgres(pg_dir) as dsn:
        one = BankProcess(workdir / "one", pki_dir, db=dsn, workers=-1, metrics_port=0, expire_every_s=0)
        two = BankProcess(workdir / "two", pki_dir, db=dsn, workers=-1, metrics_port=0, expire_every_s=0)
        _share_master_key(one, two)
        with one, two:
            one.admin.create_account("olive", "owner")
            one.admin.create_account("alice", "analyst", ["average"])
            one.admin.fund("olive", ROUNDS * 3 * COINS)
            with one.client("owner", "olive") as olive:
                olive.register_device("dev1", DEVICE_KEY)
            pg_pid = int((pg_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
            assert one.proc is not None and two.proc is not None
            cpu_of = {"banks_one": one.proc.pid, "banks_two": two.proc.pid, "postgres": pg_pid}
            single = double = 0.0
            cpu: dict[str, float] = {}
            for _ in range(ROUNDS):
                single = max(single, _round([one], cpu_of)[0])
                rate, used = _round([one, two], cpu_of)
                if rate > double:
                    double, cpu = rate, used
            if one.cli("audit", check=False).returncode != 0:
                raise RuntimeError("the bank's audit failed after the load")
    redeemed = 2 * COINS
    return {
        "banks_pg_1x_redeem_per_s": round(single, 1),
        "banks_pg_2x_redeem_per_s": round(double, 1),
        "banks_pg_2x_vs_1x": round(double / single, 3),
        "banks_pg_cpu_ms_banks": round((cpu["banks_one"] + cpu["banks_two"]) / redeemed * 1000, 3),
        "banks_pg_cpu_ms_postgres": round(cpu["postgres"] / redeemed * 1000, 3),
        "banks_pg_loadavg": round(os.getloadavg()[0], 2),
    }

"""Today's bank against the bank of a baseline commit, side by side in one run.

This machine is shared and noisy: two runs minutes apart can differ by more than the
change being judged. So both banks run at once, each its own real process over mutual
TLS with its own ledger, and the rounds alternate (base, new, new, base, ...): the same
load process (``bench_bank._load``) and the same machine moment for both. The baseline is
``git archive BASELINE`` of this repository (its ``ecoin`` tree, or since issue 14 an
``ecoin`` package of links to its rooms: ``extract``), run by this same interpreter and
libraries with ``PYTHONPATH`` on it. A baseline before protocol v2 gets v1's headers
(other labels, same layout and sizes: ``v1_headers``); the client sends them in the same
items, whose digest and tag the old bank ignores.

BASELINE is ``ECOIN_BENCH_BASELINE`` (any commit-ish), by default 6f58217: the last main
before protocol v2 (issue 12: the tag checked before a spend) and before the bank moved to
aiohttp (issue 13). ``ECOIN_BENCH_BASELINE=main python -m bench.run bank_vs_base`` on a
branch measures that branch's bank against main's, side by side.

Figures (``bank_ab_*``):
- base_redeem_per_s, new_redeem_per_s: best round, batches of 256 on 4 connections;
- redeem_new_vs_base: median over the pairs of adjacent rounds of new / base (issue 12:
  >= 0.9; issue 13: not clearly below 1);
- base_unbatched_per_s, new_unbatched_per_s, unbatched_new_vs_base: one header per request
  on 8 connections (where per-request overhead shows);
- base_vs_rsa, new_vs_rsa: each best divided by ``rsa2048_private_per_s`` of this run;
- base_median_vs_rsa, new_median_vs_rsa: the same from each bank's median round, which one
  extreme round cannot move (the best of six often is the first round of the run);
- base_cpu_ms_per_redeem, new_cpu_ms_per_redeem, cpu_new_vs_base (base / new: above 1
  when the new bank needs less), and the same ``unbatched_``: the CPU time the bank's
  processes (server and RSA workers) spent per redemption, median over the rounds. This
  is the steadier figure on a shared machine: what a bank alone on its cores would turn
  into throughput;
- base_server_ms_per_redeem, new_server_ms_per_redeem: the same for the bank's own process
  only (event loop, request threads, RSA drivers; not the RSA workers), median over the
  rounds: where the two banks' code differs most;
- rounds, unbatched_rounds: every round's base/new per second, in order (the noise);
- loadavg_start, loadavg_end: the 1-minute load average around the rounds (2 cores here).
"""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

from ecoin.common import crypto
from ecoin.common.bank_client import RedeemItem
from ecoin.protocol import wire
from ecoin.testing.bank import BankProcess
from ecoin.tools import pki as pki_tool

from . import bench_bank, cputime

BASELINE = os.environ.get("ECOIN_BENCH_BASELINE", "6f58217")
ROUNDS = 6  # per bank; the order alternates, so each goes first as often as second
BATCHED_COINS = 3_072  # 12 batches of 256 per round
UNBATCHED_COINS = 600
V1_HEADER_LABEL = b"ecoin/v1 coin header"  # protocol v1's labels (v2 renamed them all)
V1_SERVICE_LABEL = b"ecoin/v1 service\x00"
REPO = Path(__file__).resolve().parent.parent
ROOMS = ("protocol", "common", "bank", "analyst", "gateway", "dashboard", "tools", "sim", "testing")


def extract(commit: str, into: Path) -> Path:
    """An importable ``ecoin`` of ``commit`` under ``into``: before the layout of issue 14
    it was one tree, ``ecoin/``; since then the rooms sit at the root and setuptools maps
    them (pyproject's package-dir), so an ``ecoin`` package of links to them is made."""
    into.mkdir(parents=True)
    tree = into / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=False)
    if archive.returncode != 0:
        raise RuntimeError(f"cannot extract the baseline {commit}: {archive.stderr.decode()[:300]}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    if (tree / "ecoin").is_dir():
        (tree / "ecoin").rename(into / "ecoin")
        return into
    package = into / "ecoin"
    package.mkdir()
    (package / "__init__.py").touch()
    for room in ROOMS:
        if (tree / room).is_dir():
            (package / room).symlink_to(tree / room)
    return into


def speaks_v2(tree: Path) -> bool:
    """Whether the baseline's bank checks an operation's tag (protocol v2, issue 12)."""
    return "def operation_tag" in (tree / "ecoin" / "protocol" / "session.py").read_text()


def v1_headers(public: tuple[int, int], kid: bytes, coins: list[bytes]) -> list[RedeemItem]:
    """Protocol v1's headers: coin | iv | op_id | service tag, RSA-OAEP under v1's label."""
    tag = crypto.sha256(V1_SERVICE_LABEL + b"average")[: wire.SERVICE_TAG_LEN]
    items = []
    for coin in coins:
        op_id = os.urandom(wire.OP_ID_LEN)
        plain = coin + os.urandom(wire.IV_LEN) + op_id + tag
        header = crypto.oaep_encrypt(public, plain, V1_HEADER_LABEL)
        items.append(RedeemItem(kid, header, op_id, "average", bytes(32), bytes(32)))
    return items


def _prepare(bank: BankProcess, coins: int) -> None:
    bank.admin.create_account("olive", "owner")
    bank.admin.create_account("alice", "analyst", ["average"])
    bank.admin.fund("olive", coins)
    with bank.client("owner", "olive") as olive:
        olive.register_device("dev1", bench_bank.DEVICE_KEY)


def _round(
    bank: BankProcess, coins: int, batch: int, connections: int, headers: bench_bank.Headers
) -> tuple[float, float, float]:
    """(redemptions per second, CPU milliseconds per redemption of the bank's processes,
    and of its own process alone)."""
    minted, w = bench_bank.withdraw(bank, coins)
    assert bank.proc is not None
    pid = bank.proc.pid
    before, own = cputime.tree(pid), cputime.process(pid)
    rate = bench_bank.redeem_rate(bank, minted, w, batch, connections, headers)
    return rate, (cputime.tree(pid) - before) * 1000 / coins, (cputime.process(pid) - own) * 1000 / coins


def side_by_side(
    banks: dict[str, tuple[BankProcess, bench_bank.Headers]], coins: int, batch: int, conns: int
) -> dict[str, Any]:
    """ROUNDS rounds per bank, alternating: the best rate and the median CPU per redemption
    of each, and the medians of the pairwise ratios new / base."""
    rates: dict[str, list[float]] = {name: [] for name in banks}
    cpu: dict[str, list[float]] = {name: [] for name in banks}
    server: dict[str, list[float]] = {name: [] for name in banks}
    for r in range(ROUNDS):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        for name in order:
            rate, ms, own = _round(banks[name][0], coins, batch, conns, banks[name][1])
            rates[name].append(rate)
            cpu[name].append(ms)
            server[name].append(own)
    pairs = [n / b for n, b in zip(rates["new"], rates["base"], strict=True)]
    cpu_pairs = [b / n for n, b in zip(cpu["new"], cpu["base"], strict=True)]
    rounds = " ".join(f"{b:.0f}/{n:.0f}" for b, n in zip(rates["base"], rates["new"], strict=True))
    return {
        **{name: max(r) for name, r in rates.items()},
        **{f"{name}_median": statistics.median(r) for name, r in rates.items()},
        **{f"{name}_cpu": statistics.median(c) for name, c in cpu.items()},
        **{f"{name}_server": statistics.median(c) for name, c in server.items()},
        "ratio": statistics.median(pairs),
        "cpu_ratio": statistics.median(cpu_pairs),
        "rounds": rounds,
    }


def run(workdir: Path) -> dict[str, float | int | str]:
    tree = extract(BASELINE, workdir / "baseline")
    pki_dir = workdir / "pki"
    pki_tool.init(pki_dir)
    pki_tool.issue(pki_dir, "analyst", "alice")
    pki_tool.issue(pki_dir, "owner", "olive")
    rsa_rate = bench_bank.rsa_private_per_s()
    total = ROUNDS * (BATCHED_COINS + UNBATCHED_COINS)
    common = {"workers": -1, "metrics_port": 0, "expire_every_s": 0}
    base = BankProcess(workdir / "base", pki_dir, env={"PYTHONPATH": str(tree)}, **common)
    new = BankProcess(workdir / "new", pki_dir, **common)
    with base, new:
        for bank in (base, new):
            _prepare(bank, total)
        load_start = os.getloadavg()[0]
        old: bench_bank.Headers = bench_bank.v2_headers if speaks_v2(tree) else v1_headers
        pair: dict[str, tuple[BankProcess, bench_bank.Headers]] = {
            "base": (base, old),
            "new": (new, bench_bank.v2_headers),
        }
        batched = side_by_side(pair, BATCHED_COINS, bench_bank.BATCH, 4)
        single = side_by_side(pair, UNBATCHED_COINS, 1, 8)
        load_end = os.getloadavg()[0]
        for bank in (base, new):
            if bank.cli("audit", check=False).returncode != 0:
                raise RuntimeError(f"the audit of {bank.workdir.name} failed after the load")
    return {
        "bank_ab_baseline": BASELINE,
        "bank_ab_rsa2048_private_per_s": round(rsa_rate, 1),
        "bank_ab_base_redeem_per_s": round(batched["base"], 1),
        "bank_ab_new_redeem_per_s": round(batched["new"], 1),
        "bank_ab_redeem_new_vs_base": round(batched["ratio"], 3),
        "bank_ab_base_vs_rsa": round(batched["base"] / rsa_rate, 3),
        "bank_ab_new_vs_rsa": round(batched["new"] / rsa_rate, 3),
        "bank_ab_base_median_vs_rsa": round(batched["base_median"] / rsa_rate, 3),
        "bank_ab_new_median_vs_rsa": round(batched["new_median"] / rsa_rate, 3),
        "bank_ab_base_unbatched_per_s": round(single["base"], 1),
        "bank_ab_new_unbatched_per_s": round(single["new"], 1),
        "bank_ab_unbatched_new_vs_base": round(single["ratio"], 3),
        "bank_ab_base_cpu_ms_per_redeem": round(batched["base_cpu"], 3),
        "bank_ab_new_cpu_ms_per_redeem": round(batched["new_cpu"], 3),
        "bank_ab_cpu_new_vs_base": round(batched["cpu_ratio"], 3),
        "bank_ab_base_server_ms_per_redeem": round(batched["base_server"], 4),
        "bank_ab_new_server_ms_per_redeem": round(batched["new_server"], 4),
        "bank_ab_base_unbatched_cpu_ms": round(single["base_cpu"], 3),
        "bank_ab_new_unbatched_cpu_ms": round(single["new_cpu"], 3),
        "bank_ab_unbatched_cpu_new_vs_base": round(single["cpu_ratio"], 3),
        "bank_ab_rounds": batched["rounds"],
        "bank_ab_unbatched_rounds": single["rounds"],
        "bank_ab_loadavg_start": round(load_start, 2),
        "bank_ab_loadavg_end": round(load_end, 2),
    }


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=1))

"""Coin keys and the opening of coin headers.

The private coin keys are loaded once, at start (``ecoin.common.keyfiles.load_coin_private``
checks that each file is 0600 and matches its kid). Every key in ``DIR/coin`` stays
usable, so coins issued under an older key remain redeemable after a rotation; new coins
are issued under ``DIR/coin/current``.

RSA decryption holds the GIL, so ``Opener`` spreads a batch over worker processes
(``workers.py``; each loads the keys once, when it starts), in chunks of ``CHUNK`` headers
through a fair queue (``fair.py``): callers are served fairly, named by the server with
``on_behalf_of``. A coin never leaves the worker that decrypted it: the worker sends back
its hash and the session keys only.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from ecoin.common import crypto
from ecoin.common import keyfiles as pki
from ecoin.protocol import session

from .fair import FairQueue
from .vault import coin_hash
from .workers import WorkerPool

CHUNK = 4  # headers per task of a worker: a few milliseconds, so no caller holds a worker long


class Item(NamedTuple):
    """One operation to redeem, as the analyst sent it (types and sizes already checked):
    its header, and the digest and tag that let the bank verify it before paying. Item and
    Opened are immutable tuples, not frozen dataclasses: one of each is built per header in
    the bank's process, and a frozen dataclass's ``__init__`` (one ``object.__setattr__``
    per field) cost three times as much (bench bank_vs_base, docs/BANK_API.md)."""

    kid: bytes
    header: bytes
    op_id: bytes
    service: str
    digest: bytes  # SHA-256 of the OPERATION's bytes before its tag
    tag: bytes  # the OPERATION's tag: HMAC(k_mac, OPERATION_LABEL | digest)
    not_after: float | None = None  # unix seconds after which the analyst's device gave up
    price: int = 1  # the analyst's price for the service: the header must hold this many coins
    repeat: bool = False  # only ask: the keys if this analyst already paid for it; spends nothing


class Opened(NamedTuple):
    """A header that decrypted and matched its item: what the ledger needs, not the coins."""

    hashes: tuple[bytes, ...]  # one per coin of the header (1 to 4): the price the device paid
    op_id: bytes
    service: str
    digest: bytes
    k_enc: bytes
    k_mac: bytes
    iv: bytes
    not_after: float | None = None


@dataclass(frozen=True)
class Refused:
    code: str
    message: str


@functools.lru_cache(maxsize=256)
def _service_tag(service: str) -> bytes:
    """An analyst names the same few services in every item: their tags are hashed once
    (bounded, so a caller naming a new service each time only costs itself the hash)."""
    return session.service_tag(crypto, service)


class CoinKeys:
    def __init__(self, keys: dict[bytes, rsa.RSAPrivateKey], current: bytes) -> None:
        if current not in keys:
            raise pki.PKIError(f"the current coin key {current.hex()} has no private key")
        self.keys = keys
        self.current = current
        self._oaep = crypto.oaep(session.HEADER_LABEL)

    @classmethod
    def load(cls, pki_dir: str | Path) -> CoinKeys:
        return cls(pki.load_coin_private(pki_dir), bytes.fromhex(pki.current_kid(pki_dir)))

    def public(self, kid: bytes | None = None) -> tuple[bytes, int, int]:
        """(kid, n, e) of a coin key, the current one by default."""
        kid = kid or self.current
        numbers = self.keys[kid].public_key().public_numbers()
        return kid, numbers.n, numbers.e

    def open(self, item: Item) -> Opened | Refused:
        key = self.keys.get(item.kid)
        if key is None:
            return Refused("unknown_key", f"no coin key with kid {item.kid.hex()}")
        size = key.key_size // 8
        if len(item.header) != size:
            return Refused("malformed", f"a header under coin key {item.kid.hex()} is {size} bytes")
        try:
            plain = key.decrypt(item.header, self._oaep)
            coins, iv, op_id, tag = session.split_header(plain)
        except ValueError:  # includes wire.InvalidFrame; one message: no padding oracle
            return Refused("malformed", "the header does not decrypt")
        if not crypto.equal(op_id, item.op_id):
            return Refused("malformed", "the header's op_id does not match the item's")
        try:
            want = _service_tag(item.service)
        except (TypeError, ValueError) as exc:
            return Refused("malformed", f"bad service name: {exc}")
        if not crypto.equal(tag, want):
            return Refused("malformed", "the header's service does not match the item's")
        k_enc, k_mac = session.session_keys(crypto, coins, op_id)
        try:  # before anything is spent: a modified operation costs its device nothing
            session.check_operation_tag(crypto, k_mac, item.digest, item.tag)
        except session.InvalidTag:
            return Refused("bad_tag", "the operation's tag does not verify: it was modified on the way")
        hashes = tuple(coin_hash(coins[i : i + 32]) for i in range(0, len(coins), 32))
        if len(set(hashes)) != len(hashes):  # one coin twice must not pay a price of two
            return Refused("malformed", "a coin appears twice in the header")
        return Opened(hashes, op_id, item.service, item.digest, k_enc, k_mac, iv, item.not_after)


# Worker processes: each holds its own CoinKeys, loaded once when it starts.
_worker_keys: CoinKeys | None = None


# RSA is bulk work: the process that speaks HTTP and SQL runs first. Without it a small
# request's ~6 thread wake-ups each wait for a timeslice behind the workers of a flood
# (bank_fairness_ratio 7.5 on a quiet host). On a host shared with other work the niced
# workers also yield to that work (bench bank_vs_base: the un-niced old bank gains then).
WORKER_NICE = 10


def _init_worker(pki_dir: str) -> None:
    global _worker_keys
    _worker_keys = CoinKeys.load(pki_dir)
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass


# What crosses a worker's pipe, both ways: plain tuples of bytes, not the dataclasses
# (pickling a dataclass names its class and rebuilds it through copyreg; a chunk's round
# trip cost the bank's process more than its RSA left room for, bench bank_vs_base). The
# answer holds only what the worker learnt (the coins' hashes and the session keys): the
# bank pairs it with the item it sent.
Job = tuple[bytes, bytes, bytes, str, bytes, bytes]  # kid, header, op_id, service, digest, tag
Answer = tuple[tuple[bytes, ...], bytes, bytes, bytes] | tuple[str, str]  # opened, or refused


def _job(item: Item) -> Job:
    return (item.kid, item.header, item.op_id, item.service, item.digest, item.tag)


def _answer(o: Opened | Refused) -> Answer:
    return (o.hashes, o.k_enc, o.k_mac, o.iv) if isinstance(o, Opened) else (o.code, o.message)


def _result(item: Item, a: Answer) -> Opened | Refused:
    if len(a) == 2:
        return Refused(*a)
    hashes, k_enc, k_mac, iv = a
    return Opened(hashes, item.op_id, item.service, item.digest, k_enc, k_mac, iv, item.not_after)


def _open_chunk(jobs: list[Job]) -> list[Answer]:
    if _worker_keys is None:
        raise RuntimeError("coin keys are not loaded in this worker")
    return [_answer(_worker_keys.open(Item(*job))) for job in jobs]


_caller = threading.local()


@contextmanager
def on_behalf_of(caller: str) -> Iterator[None]:
    """The headers this thread opens meanwhile are queued as ``caller``'s."""
    before = getattr(_caller, "name", "")
    _caller.name = caller
    try:
        yield
    finally:
        _caller.name = before


class Opener:
    """Opens headers, in ``workers`` processes (0: in the calling thread)."""

    def __init__(self, pki_dir: str | Path, workers: int = 0) -> None:
        self.pki_dir = str(pki_dir)
        self.keys = CoinKeys.load(pki_dir)
        self.workers = workers
        self._fair: FairQueue[list[Job], list[Answer]] = FairQueue()
        self._pool: WorkerPool | None = None
        if workers > 0:
            self._pool = WorkerPool(workers, self._fair, _init_worker, (self.pki_dir,), _open_chunk)

    def open(self, items: list[Item]) -> list[Opened | Refused]:
        if self._pool is None:
            return [self.keys.open(item) for item in items]
        jobs = [_job(item) for item in items]
        chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
        parts = self._fair.run(getattr(_caller, "name", ""), chunks)
        return [_result(item, a) for item, a in zip(items, (a for part in parts for a in part), strict=True)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

"""The top-up relay: a device's TOPUP_REQUEST goes to the bank (``POST /v1/topup``, mTLS with
the gateway's certificate) and the sealed TOPUP_RESPONSE comes back. The gateway cannot
read either: both are authenticated with the device key, which it never has.

Calls run on a few worker threads so a slow bank never stalls the MQTT or serial threads;
when every worker is busy the request is answered FAILED at once (the device retries).
The HTTPS call itself is the bank's client, ``ecoin.common.bank_client.BankClient``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ecoin.gateway.config import Bank

log = logging.getLogger("ecoin.gateway.topup")


class TopupError(Exception):
    """The bank could not be reached or did not answer with a top-up frame."""


class BankClient(Protocol):
    def topup(self, frame: bytes) -> bytes: ...


def bank_client(cfg: Bank) -> BankClient:
    """The bank's own client (ecoin.common.bank_client: one keep-alive mTLS connection, the
    gateway's certificate, retried once on a broken connection)."""
    from ecoin.common.bank_client import BankClient as Client

    try:
        return Client(cfg.url, cfg.cert, cfg.key, cfg.ca, timeout=cfg.timeout_s)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TopupError(f"bank client: {exc}") from exc


class TopupRelay:
    def __init__(self, bank: BankClient, workers: int = 4) -> None:
        self.bank = bank
        self._slots = threading.BoundedSemaphore(workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="topup")

    def submit(self, frame: bytes, answer: Callable[[bytes | None], None]) -> bool:
        """Starts one relay; ``answer`` gets the response frame, or None on any failure.
        False if every worker is busy (nothing was sent)."""
        if not self._slots.acquire(blocking=False):
            return False
        self._pool.submit(self._run, frame, answer)
        return True

    def _run(self, frame: bytes, answer: Callable[[bytes | None], None]) -> None:
        try:
            try:
                response: bytes | None = self.bank.topup(frame)
            except Exception as exc:  # any failure is the same FAILED for the device
                log.warning("topup_failed", extra={"error": str(exc)})
                response = None
            answer(response)
        finally:
            self._slots.release()

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

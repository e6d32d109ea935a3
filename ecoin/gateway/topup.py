"""The top-up relay: a device's TOPUP_REQUEST goes to the bank (``POST /v1/topup``, mTLS with
the gateway's certificate) and the sealed TOPUP_RESPONSE comes back. The gateway cannot
read either: both are authenticated with the device key, which it never has.

Calls run on a few worker threads so a slow bank never stalls the MQTT or serial threads;
when every worker is busy the request is answered FAILED at once (the device retries).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import urlsplit

from ecoin import tls
from ecoin.gateway.config import Bank

log = logging.getLogger("ecoin.gateway.topup")


class TopupError(Exception):
    """The bank could not be reached or did not answer with a top-up frame."""


class BankClient(Protocol):
    def topup(self, frame: bytes) -> bytes: ...


class HttpsBank:
    """A minimal persistent mTLS client for the one call the gateway makes. One connection
    per worker thread, kept alive and re-made after any failure."""

    def __init__(self, cfg: Bank) -> None:
        url = urlsplit(cfg.url)
        if url.scheme != "https" or not url.hostname:
            raise TopupError(f"bank url must be https://host:port, got {cfg.url!r}")
        self.host = url.hostname
        self.port = url.port or 443
        self.timeout = cfg.timeout_s
        try:
            self.context = tls.client_context(cfg.cert, cfg.key, cfg.ca)
        except (OSError, ssl.SSLError) as exc:
            raise TopupError(f"bank TLS files: {exc}") from exc
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
            self._local.conn = conn
        return conn

    def topup(self, frame: bytes) -> bytes:
        body = json.dumps({"frame": base64.b64encode(frame).decode()})
        conn = self._conn()
        try:
            conn.request("POST", "/v1/topup", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            conn.close()
            self._local.conn = None
            raise TopupError(f"bank unreachable: {exc}") from exc
        if resp.status != 200:
            code = _error_code(data)
            raise TopupError(f"bank answered {resp.status} {code}")
        try:
            return base64.b64decode(json.loads(data)["frame"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise TopupError("bank answer has no frame") from exc


def _error_code(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


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

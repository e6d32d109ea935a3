"""The analyst service: operations in from MQTT, redeemed at the bank, analysed, answered.

One operation's path, and the thread that does each step::

    paho thread      decode the frame, refuse garbage, drop a duplicate, queue the header
    redeemer thread  redeem a batch of headers at the bank (ecoin.analyst.redeemer)
    worker thread    check the tag, decrypt, run the analyser in a worker process,
                     seal the result, publish it to the response topic
    paho thread      the broker has the reply: acknowledge the operation

Every failure gets the generic ERROR frame (FAILED) on the response topic; the log says the
specific reason (never a coin, a key or a payload). An operation is acknowledged to the
broker only after its reply is at the broker, so a crash loses nothing: the broker re-sends
it to the restarted process, and the bank's redemption, idempotent for the same operation
(its digest), gives that process the same keys again; nothing is paid before the bank has
checked the operation's tag.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from ecoin.common import crypto, topics
from ecoin.protocol import session, wire

from .link import Link
from .metrics import Metrics
from .plugins import Analyser, InvalidReadings
from .readings import InvalidResult, with_paid
from .redeemer import Bank, Outcome, Redeemer, RedeemItem
from .settings import Settings
from .workers import AnalysisFailed, AnalysisTimeout, WorkerPool

log = logging.getLogger("ecoin.analyst")

_NO_OP_ID = bytes(wire.OP_ID_LEN)
SUPERVISE_S = 1.0  # how often the supervisor checks the redeemer threads
# A thread that wants the GIL waits up to this long for a busy one to let go. An operation
# crosses four threads here (paho, redeemer, worker, paho), and with CPython's 5 ms default
# each hand-over could wait a whole interval behind another thread's decoding or sealing:
# at 50 operations/s that was a third of the device's p99 (docs/SCALING.md 1.3). The bank
# and the gateway use the same value.
GIL_SWITCH_S = 0.0005


@dataclass
class _Op:
    link: Link
    key: bytes  # SHA-256 of the frame: a redelivery has the same; b"" for refused frames
    frame: bytes
    op_id: bytes
    reply_to: str | None
    correlation: bytes | None
    mids: list[tuple[int, int]] = field(default_factory=list)  # (connection generation, packet id)
    started: float = field(default_factory=time.monotonic)

    @property
    def short(self) -> str:
        return self.op_id[:4].hex()  # enough to find an operation in the logs; not a secret


class Analyst:
    def __init__(
        self, settings: Settings, analysers: dict[str, Analyser], banks: Sequence[Bank] | None = None
    ):
        missing = [s for s in settings.services if s not in analysers]
        if missing:
            raise ValueError(f"no analyser installed for: {', '.join(missing)} (see `ecoin-analyst list`)")
        self.settings = settings
        self.metrics = Metrics()
        self.analysers = {s: analysers[s] for s in settings.services}
        options = {s: a.configured(settings.options.get(s, {})).options for s, a in self.analysers.items()}
        self.pool = WorkerPool(
            settings.worker_count(),
            settings.limits.analysis_timeout_s,
            options,
            settings.limits.memory_mb,
            on_time=lambda service, seconds: self.metrics.analysis_seconds.labels(service).observe(seconds),
        )
        b = settings.bank
        self.redeemer = Redeemer(
            banks or self._bank_clients(), b.batch_max, b.linger_ms / 1000, b.wait_max_s, metrics=self.metrics
        )
        self.executor = ThreadPoolExecutor(settings.thread_count(), thread_name_prefix="op")
        self.links = [
            Link(settings, s, self._announcement(s), self._intake, self.metrics) for s in self.analysers
        ]
        self._seen: OrderedDict[bytes, _Op | None] = OrderedDict()  # None: answered
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._stop = threading.Event()

    def _announcement(self, service: str) -> dict[str, Any]:
        o = self.settings.offer(service)
        return self.analysers[service].announcement(self.settings.id, o.price, o.version, o.description)

    def _bank_clients(self) -> list[Bank]:
        from ecoin.common.bank_client import BankClient

        cert, key, ca = self.settings.tls_paths()
        b = self.settings.bank
        return [BankClient(b.url, cert, key, ca, timeout=b.timeout_s) for _ in range(b.connections)]

    # Life cycle.

    def start(self) -> Analyst:
        sys.setswitchinterval(GIL_SWITCH_S)
        self.pool.start()
        self.redeemer.start()
        for link in self.links:
            link.start()
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        log.info(
            "analyst_started",
            extra={
                "analyst": self.settings.id,
                "instance": self.settings.instance,
                "services": list(self.analysers),
                "workers": self.pool.size,
            },
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once every service is connected and subscribed."""
        deadline = time.monotonic() + timeout
        return all(link.subscribed.wait(max(0.0, deadline - time.monotonic())) for link in self.links)

    def healthy(self) -> bool:
        return bool(self.status()["ok"])

    def status(self) -> dict[str, Any]:
        """What /healthz answers: unhealthy while a broker link is down, or while we cannot
        redeem (the bank fails, or a redeemer thread is dead and not yet restarted)."""
        broker = all(link.subscribed.is_set() for link in self.links)
        bank = self.redeemer.healthy()
        return {"ok": broker and bank and not self._stop.is_set(), "broker": broker, "bank": bank}

    def stop(self) -> None:
        """Clears the announcements, stops taking operations, lets those in flight finish
        (up to limits.drain_s), then closes. Unfinished ones stay with the broker."""
        if self._stop.is_set():
            return
        self._stop.set()
        for link in self.links:  # first: gateways stop counting on us
            link.unannounce()
            link.unsubscribe()
        with self._idle:
            drained = self._idle.wait_for(lambda: self._in_flight == 0, self.settings.limits.drain_s)
        self.redeemer.close()
        self.executor.shutdown(wait=True)
        self.pool.close()
        for link in self.links:
            link.stop()
        log.info("analyst_stopped", extra={"drained": drained, "left_with_broker": self._in_flight})

    def _supervise(self) -> None:
        """Restarts a dead redeemer thread (as the gateway's link does for its network
        thread) and repeats the announcements: several processes of one analyst share the
        announcement topic, and when one dies its will clears it."""
        next_announce = time.monotonic() + self.settings.announce_every_s
        while not self._stop.wait(min(SUPERVISE_S, self.settings.announce_every_s)):
            try:
                self.redeemer.ensure_running()
                if time.monotonic() >= next_announce:
                    next_announce = time.monotonic() + self.settings.announce_every_s
                    for link in self.links:
                        if link.connected.is_set():
                            link.announce()
            except Exception:  # the supervisor must outlive any bug it meets
                log.exception("supervisor_error")

    # Step 1, paho's thread: take the message in.

    def _intake(self, link: Link, msg: mqtt.MQTTMessage, generation: int) -> None:
        frame = bytes(msg.payload)
        props = msg.properties
        reply_to = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        op = _Op(link, b"", frame, _op_id_of(frame), reply_to, correlation, [(generation, msg.mid)])
        with self._lock:
            self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            _, kid, service, header, ct, tag = wire.decode_operation(frame)
        except (wire.InvalidFrame, TypeError) as exc:
            return self._refuse(op, _frame_problem(str(exc)), str(exc))
        if service != link.service:
            return self._refuse(op, "wrong_service", f"{service} arrived on the topic of {link.service}")
        if len(ct) - 16 > self.settings.limits.max_input_bytes:  # PKCS#7 adds at most 16 bytes
            return self._refuse(op, "input_too_large", f"{len(ct)} bytes of ciphertext, before paying")
        if reply_to is None or not topics.is_reply(reply_to):
            return self._refuse(op, "bad_response_topic", "no response topic, or not ecoin/gw/<id>/reply")
        op.key = hashlib.sha256(frame).digest()
        if self._duplicate(op):
            return None
        # The bank checks the tag over this digest before it pays, and binds its spend to it.
        left = _patience(props)
        if left is not None and left <= 0:
            return self._refuse(op, "deadline_passed", "its device no longer waits: not redeemed")
        digest = session.operation_digest(crypto, frame)
        price = self.settings.offer(service).price  # the bank refuses a header with fewer coins
        if left is None:
            item, deadline = RedeemItem(kid, header, op.op_id, service, digest, tag, price=price), None
        else:  # the bank refuses it too past the deadline: a call stuck on the way pays nothing
            item = RedeemItem(kid, header, op.op_id, service, digest, tag, time.time() + left, price)
            deadline = time.monotonic() + left
        self.redeemer.submit(
            item,
            lambda outcome: self._redeemed(op, outcome),
            deadline,
            lambda keys: self._paid_late(op, keys),
        )
        return None

    def _duplicate(self, op: _Op) -> bool:
        """Records the operation; True if it is already known (then it is answered once)."""
        with self._lock:
            if op.key not in self._seen:
                self._seen[op.key] = op
                self._forget_old()
                return False
            first = self._seen[op.key]
            if first is not None:  # still in progress: its acknowledgement covers this copy
                first.mids.extend(op.mids)
            self._in_flight -= 1
        self.metrics.in_flight.dec()
        self.metrics.duplicates.inc()
        log.info("duplicate", extra={"service": op.link.service, "op": op.short, "answered": first is None})
        if first is None:
            for generation, mid in op.mids:
                op.link.ack(mid, generation)
        return True

    def _forget_old(self) -> None:
        while len(self._seen) > self.settings.limits.dedupe:
            key, value = next(iter(self._seen.items()))
            if value is not None:  # in progress: keep it, it is not old
                self._seen.move_to_end(key)
                break
            del self._seen[key]

    def _refuse(self, op: _Op, reason: str, detail: str) -> None:
        self.metrics.rejected.labels(op.link.service, reason).inc()
        self._fail(op, reason, detail)

    # Step 2, a redeemer thread: the bank answered (or did not).

    def _redeemed(self, op: _Op, outcome: Outcome) -> None:
        if outcome.reason == "shutdown":  # not answered, not acknowledged: the broker keeps it
            with self._lock:
                self._seen.pop(op.key, None)
                self._in_flight -= 1
                self._idle.notify_all()
            self.metrics.in_flight.dec()
            return
        try:
            self.executor.submit(self._process, op, outcome)
        except RuntimeError:  # a redeem call outlived the drain: the executor is gone
            self._redeemed(op, Outcome(None, "shutdown"))

    # Step 3, a worker thread: decrypt, analyse, encrypt, reply.

    def _process(self, op: _Op, outcome: Outcome) -> None:
        try:
            self._analyse(op, outcome)
        except Exception as exc:  # a bug of ours: the device still gets its answer
            log.exception("operation_crashed", extra={"op": op.short, "error": type(exc).__name__})
            self._fail(op, "internal", type(exc).__name__)

    def _analyse(self, op: _Op, outcome: Outcome) -> None:
        if outcome.keys is None:
            return self._fail(op, outcome.reason, "")
        frame, reason, detail = self._result(op, outcome)
        if frame is None:
            return self._fail(op, reason, detail)
        self._send(op, frame, "ok")
        return None

    def _result(self, op: _Op, outcome: Outcome) -> tuple[bytes | None, str, str]:
        """The sealed RESULT under the outcome's keys, or (None, reason, detail) why none."""
        assert outcome.keys is not None
        k_enc, k_mac, iv = outcome.keys
        service = op.link.service
        started = time.monotonic()
        try:
            plain = session.open_operation(crypto, op.frame, k_enc, k_mac, iv)
        except session.InvalidTag:
            return None, "bad_tag", "tag or padding check failed"
        opened = time.monotonic()
        if len(plain) > self.settings.limits.max_input_bytes:
            return None, "input_too_large", f"{len(plain)} bytes"
        try:
            result = self.pool.run(service, plain)
        except InvalidReadings as exc:
            return None, "invalid_readings", str(exc)
        except AnalysisTimeout as exc:
            self.metrics.workers_replaced.inc()
            return None, "analysis_timeout", str(exc)
        except AnalysisFailed as exc:
            return None, "analysis_failed", str(exc)
        try:
            result = with_paid(result, outcome.coins)
        except InvalidResult as exc:
            return None, "analysis_failed", str(exc)
        analysed = time.monotonic()
        frame = session.seal_result(crypto, op.op_id, k_enc, k_mac, result)
        self.metrics.crypto_seconds.observe((opened - started) + (time.monotonic() - analysed))
        return bytes(frame), "ok", ""

    # Later: a payment whose answer the bank lost turned out made (redeemer.py).

    def _paid_late(self, op: _Op, outcome: Outcome) -> None:
        """The operation was answered FAILED, yet its coin was paid: its RESULT still goes to
        the reply topic, where the gateway relays it late and the device settles its doubt."""
        try:
            self.executor.submit(self._send_late, op, outcome)
        except RuntimeError:  # stopping: the device's claim shows the coin as redeemed
            log.warning("late_result_dropped", extra={"service": op.link.service, "op": op.short})

    def _send_late(self, op: _Op, outcome: Outcome) -> None:
        fields = {"service": op.link.service, "op": op.short}
        try:
            frame, reason, detail = self._result(op, outcome)
            if frame is None or op.reply_to is None:
                log.warning("late_result_failed", extra={**fields, "reason": reason, "detail": detail[:300]})
                return
            op.link.reply(op.reply_to, op.correlation, frame, lambda ok: self._sent_late(op, ok))
        except Exception as exc:  # a bug of ours: nothing more to answer
            log.exception("late_result_crashed", extra={**fields, "error": type(exc).__name__})

    def _sent_late(self, op: _Op, ok: bool) -> None:
        fields = {"service": op.link.service, "op": op.short}
        if not ok:
            log.error("reply_refused", extra=fields)
            return
        log.info("late_result", extra=fields)
        self.metrics.operations.labels(op.link.service, "late").inc()

    def _fail(self, op: _Op, reason: str, detail: str) -> None:
        log.warning(
            "operation_failed",
            extra={"service": op.link.service, "op": op.short, "reason": reason, "detail": detail[:300]},
        )
        self._send(op, wire.encode_error(op.op_id, wire.E_FAILED), reason)

    def _send(self, op: _Op, frame: bytes | bytearray, outcome: str) -> None:
        if op.reply_to is None or not topics.is_reply(op.reply_to):
            self._done(op, outcome, True)  # nowhere to answer: acknowledge and move on
            return
        sent = time.monotonic()

        def then(ok: bool) -> None:
            self.metrics.reply_seconds.observe(time.monotonic() - sent)
            self._done(op, outcome, ok)

        op.link.reply(op.reply_to, op.correlation, bytes(frame), then)

    # Step 4, paho's thread: the reply is at the broker.

    def _done(self, op: _Op, outcome: str, sent: bool) -> None:
        if not sent:
            log.error("reply_refused", extra={"service": op.link.service, "op": op.short})
        with self._lock:
            mids = list(op.mids)
            if op.key:
                self._seen[op.key] = None
            self._in_flight -= 1
            self._idle.notify_all()
        for generation, mid in mids:
            op.link.ack(mid, generation)
        self.metrics.in_flight.dec()
        self.metrics.operations.labels(op.link.service, outcome).inc()
        self.metrics.operation_seconds.labels(op.link.service).observe(time.monotonic() - op.started)


def _op_id_of(frame: bytes) -> bytes:
    """The op_id of a frame, if it has one, for the ERROR frame of a refusal."""
    if len(frame) >= wire.PREFIX_LEN:
        return bytes(frame[2 : wire.PREFIX_LEN])
    return _NO_OP_ID


def _frame_problem(message: str) -> str:
    if message.startswith("oversized"):
        return "oversized"
    if "truncated" in message:
        return "truncated"
    return "malformed"


# Time an answer needs after the bank's: decryption, analysis, the reply's way to the device.
_ANSWER_S = 1.0


def _patience(props: object) -> float | None:
    """Seconds until the device stops waiting, from the MQTT 5 message expiry the gateway
    sets to the device's remaining patience (the broker counts it down while the operation
    waits); None if the operation carries none. Redeeming later would pay for an answer the
    device never takes, so the analyst stops ``_ANSWER_S`` before it."""
    expiry = getattr(props, "MessageExpiryInterval", None)
    if not isinstance(expiry, int):
        return None
    return expiry - _ANSWER_S

"""The router: every device frame in, every answer out.

``handle`` takes a frame from a device (MQTT or serial), checks its shape, size and the
device's rate, and then answers a QUERY from the directory, relays a TOPUP_REQUEST to the
bank, or forwards an OPERATION upstream (or to the store-and-forward queue while upstream
is down or busy). ``on_reply`` relays an analyst's answer to the device that asked.

One worker thread sleeps until the next thing is due (an operation's timeout, the queue's
age cap, a replay token) or until it is woken; it never polls.

Only prefixes and names are read: frames are never decrypted and never logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ecoin.gateway.directory import Directory
from ecoin.gateway.limits import DeviceLimiter, TokenBucket
from ecoin.gateway.metrics import Metrics
from ecoin.gateway.queue import OpQueue, Queued, QueueError
from ecoin.protocol import wire

log = logging.getLogger("ecoin.gateway.router")

Send = Callable[[str, bytes], bool]  # (device id, frame) -> handed to the transport?
RECENT_MAX = 50_000  # (device, op_id) pairs remembered to drop repeated operations
WAITING_MAX = 10_000  # operations waiting in memory for a window slot (then: the queue)
# Well-formed replies relayed per operation until its deadline. More than one: a forged
# first reply (any analyst can write to the reply topic) must not end a paid operation, the
# device keeps waiting for one with a valid tag (PROTOCOL 4.2). Bounded: a flood ends here.
REPLIES_MAX = 4
_ERROR_KIND = {
    wire.E_FAILED: "failed",
    wire.E_UNAVAILABLE: "unavailable",
    wire.E_TIMEOUT: "timeout",
    wire.E_DROPPED: "dropped",
    wire.E_REJECTED: "rejected",
}


class UpstreamPort(Protocol):
    @property
    def ready(self) -> bool: ...
    def send(self, service: str, frame: bytes, corr: bytes) -> bool: ...
    def has_room(self) -> bool: ...


class TopupPort(Protocol):
    def submit(self, frame: bytes, answer: Callable[[bytes | None], None]) -> bool: ...


@dataclass(slots=True)
class Pending:
    corr: bytes
    device: str
    route: str
    op_id: bytes
    started: float  # monotonic time the device's frame came in
    deadline: float
    replies: int = 0  # relayed so far; at the deadline, none means ERROR TIMEOUT


class Router:
    def __init__(
        self,
        *,
        directory: Directory,
        queue: OpQueue,
        metrics: Metrics,
        limiter: DeviceLimiter,
        frame_max: int = wire.FRAME_MAX,
        op_timeout_s: float = 30.0,
        replay_rate: float = 200.0,
        replay_burst: int = 50,
        recent_max: int = RECENT_MAX,
    ) -> None:
        self.directory = directory
        self.queue = queue
        self.metrics = metrics
        self.limiter = limiter
        self.frame_max = frame_max
        self.op_timeout_s = op_timeout_s
        self.recent_max = recent_max
        self.routes: dict[str, Send] = {}
        self.upstream: UpstreamPort | None = None
        self.topup: TopupPort | None = None
        self._pending: dict[bytes, Pending] = {}
        self._timeouts: deque[Pending] = deque()
        self._waiting: deque[tuple[str, str, str, bytes, bytes, float]] = deque()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._topups: set[bytes] = set()  # (device, op_id) of top-ups at the bank right now
        self._lock = threading.Lock()
        self._boot = os.urandom(4)  # a reply meant for an earlier run never matches
        self._seq = itertools.count()
        self._bucket = TokenBucket(replay_rate, replay_burst)
        self._wake = threading.Condition()
        self._kicked = False
        self._replay_blocked = False
        self._drops, self._drops_logged = 0, 0.0
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._sync_queue_metrics()

    # Life cycle.

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="router", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._worker:
            self._worker.join(10)

    @property
    def alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def kick(self) -> None:
        """Wakes the worker (upstream is ready, a window slot freed, something queued)."""
        with self._wake:
            self._kicked = True
            self._wake.notify()

    def on_window(self) -> None:
        """A window slot freed (or the directory changed): send what waits for one."""
        if self._waiting:
            self._drain_waiting()
        if self.queue.depth:
            self.kick()

    # Device frames in.

    def handle(self, route: str, device: str, frame: bytes) -> None:
        """One frame from a device. Never raises: a bad frame is counted and answered."""
        try:
            self._handle(route, device, frame)
        except Exception:
            self.metrics.callback_errors.inc()
            log.exception("handle_failed", extra={"route": route, "device": device})

    def _handle(self, route: str, device: str, frame: bytes) -> None:
        source = "serial" if route.startswith("serial:") else "mqtt"
        started = time.monotonic()
        if len(frame) > self.frame_max:
            self._malformed(source, route, device, frame)
            return
        try:
            ftype, op_id = wire.frame_type(frame)
        except (wire.InvalidFrame, TypeError):  # another version, an unknown type, too short
            self._malformed(source, route, device, frame)
            return
        if not self.limiter.allow(device):
            self._error(route, device, op_id, wire.E_REJECTED)
            return
        try:
            if ftype == wire.T_OPERATION:
                service = wire.decode_operation(frame)[2]
                self._operation(route, device, op_id, service, bytes(frame), started)
            elif ftype == wire.T_QUERY:
                service = wire.decode_query(frame)[1]
                self.metrics.frames_in["query"].inc()
                live = self.directory.is_live(service)
                status = wire.encode_status(op_id, wire.S_LIVE if live else wire.S_UNAVAILABLE)
                self._answer(route, device, bytes(status), "status")
            elif ftype == wire.T_TOPUP_REQUEST:
                named = wire.decode_topup_request(frame)[1]
                self._topup(route, device, op_id, named, bytes(frame))
            else:
                raise wire.InvalidFrame("devices do not send this frame type")
        except wire.InvalidFrame:
            self.metrics.malformed[source].inc()
            self._error(route, device, op_id, wire.E_REJECTED)

    def _malformed(self, source: str, route: str, device: str, frame: bytes) -> None:
        """Counted, and answered ERROR REJECTED whenever the 18-byte prefix can be read,
        whatever its version or type: a device speaking another version learns it at once
        instead of waiting out its timeout. Rate-limited like any answer."""
        self.metrics.malformed[source].inc()
        if len(frame) >= wire.PREFIX_LEN and self.limiter.allow(device):
            self._error(route, device, bytes(frame[2 : wire.PREFIX_LEN]), wire.E_REJECTED)

    def _first_time(self, device: str, op_id: bytes) -> bool:
        key = device.encode() + op_id
        with self._lock:
            if key in self._recent:
                return False
            self._recent[key] = None
            if len(self._recent) > self.recent_max:
                self._recent.popitem(last=False)
        return True

    def _operation(
        self, route: str, device: str, op_id: bytes, service: str, frame: bytes, started: float
    ) -> None:
        self.metrics.frames_in["operation"].inc()
        if not self.directory.is_live(service):  # refused, not remembered: a later retry may pass
            self._error(route, device, op_id, wire.E_UNAVAILABLE)
            return
        if not self._first_time(device, op_id):
            self.metrics.duplicates.inc()
            return
        item = (route, device, service, op_id, frame, started)
        if not self.queue.depth and not self._waiting and self._send(*item):
            return
        upstream = self.upstream
        if not self.queue.depth and upstream is not None and upstream.ready:
            # Connected, only the window is full: wait in memory for the next PUBACK.
            with self._lock:
                room = len(self._waiting) < WAITING_MAX
                if room:
                    self._waiting.append(item)
            if room:
                self._drain_waiting()  # a slot may have freed meanwhile
                return
        self._enqueue(route, device, service, op_id, frame)

    def _drain_waiting(self) -> None:
        upstream = self.upstream
        while upstream is not None and upstream.has_room():
            with self._lock:
                if not self._waiting:
                    return
                item = self._waiting.popleft()
            if not self._send(*item):
                with self._lock:
                    self._waiting.appendleft(item)
                return

    def upstream_lost(self) -> None:
        """Operations waiting for a window slot were never sent: they go to the queue."""
        with self._lock:
            items, self._waiting = list(self._waiting), deque()
        for route, device, service, op_id, frame, _ in items:
            self._enqueue(route, device, service, op_id, frame)

    def _topup(self, route: str, device: str, op_id: bytes, named: str, frame: bytes) -> None:
        """Relays a top-up to the bank. An identical resend (same device and op_id) is
        relayed again once the first relay has ended, also after a FAILED: that is how a
        device recovers a lost answer (PROTOCOL 4.5), and the bank answers it with the same
        coins, charged once. Only a resend while the first is still at the bank is dropped:
        its answer is on the way."""
        if named != device:  # a device may only top itself up
            raise wire.InvalidFrame("top-up for another device")
        key = device.encode() + op_id
        with self._lock:
            busy = key in self._topups
            self._topups.add(key)
        if busy:
            self.metrics.duplicates.inc()
            return
        self.metrics.frames_in["topup"].inc()
        started = time.monotonic()

        def answer(response: bytes | None) -> None:
            with self._lock:
                self._topups.discard(key)
            if response is None or not _frame_is(response, wire.T_TOPUP_RESPONSE, op_id):
                self._error(route, device, op_id, wire.E_FAILED)
                return
            self._answer(route, device, response, "topup")
            self.metrics.latency.observe(time.monotonic() - started)

        if self.topup is None or not self.topup.submit(frame, answer):
            answer(None)

    # Upstream.

    def _send(
        self, route: str, device: str, service: str, op_id: bytes, frame: bytes, started: float
    ) -> bool:
        upstream = self.upstream
        if upstream is None:
            return False
        corr = self._boot + next(self._seq).to_bytes(8, "big")
        now = time.monotonic()
        entry = Pending(corr, device, route, op_id, started, now + self.op_timeout_s)
        with self._lock:  # registered first: the reply may beat send() back
            self._pending[corr] = entry
        if not upstream.send(service, frame, corr):
            with self._lock:
                self._pending.pop(corr, None)
            return False
        with self._lock:
            was_idle = not self._timeouts
            self._timeouts.append(entry)
        self.metrics.forwarded.inc()
        if was_idle:
            self.kick()  # the worker may be sleeping with no deadline at all
        return True

    def _enqueue(self, route: str, device: str, service: str, op_id: bytes, frame: bytes) -> None:
        dropped = self.queue.put(device, route, service, op_id, frame)
        self._sync_queue_metrics()
        for q in dropped:
            self._error(q.route, q.device, q.op_id, wire.E_DROPPED)
        if dropped:
            self._note_drops(len(dropped))
        self.kick()

    def on_reply(self, corr: bytes | None, frame: bytes) -> None:
        """An analyst's answer (RESULT or ERROR) on our reply topic. Never raises."""
        try:
            self._on_reply(corr, frame)
        except Exception:
            self.metrics.callback_errors.inc()
            log.exception("reply_failed")

    def _on_reply(self, corr: bytes | None, frame: bytes) -> None:
        with self._lock:
            entry = self._pending.get(corr) if isinstance(corr, bytes) else None
        if entry is None:
            self.metrics.late_replies.inc()
            return
        relay = _relayable(frame, entry.op_id)
        if relay is None:  # not an answer to this operation: ignore it, the timeout still runs
            self.metrics.malformed["reply"].inc()
            return
        with self._lock:
            if self._pending.get(entry.corr) is not entry or entry.replies >= REPLIES_MAX:
                over = True  # timed out meanwhile, or this operation had its share of replies
            else:
                over = False
                entry.replies += 1
        if over:
            self.metrics.late_replies.inc()
            return
        kind, answer = relay
        self._answer(entry.route, entry.device, answer, kind)
        if entry.replies == 1:
            self.metrics.latency.observe(time.monotonic() - entry.started)

    # Answers down.

    def _answer(self, route: str, device: str, frame: bytes, kind: str) -> None:
        send = self.routes.get(route)
        if send is None or not send(device, frame):
            self.metrics.undeliverable.inc()
            return
        self.metrics.frames_out[kind].inc()

    def _error(self, route: str, device: str, op_id: bytes, code: int) -> None:
        self.metrics.errors[_ERROR_KIND[code]].inc()
        self._answer(route, device, bytes(wire.encode_error(op_id, code)), "error")

    # The worker: timeouts, the queue's age cap, replay.

    def _work(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                if not self._kicked:
                    self._wake.wait(self._next_wait())
                if self._kicked:
                    self._replay_blocked = False
                self._kicked = False
                if self._stopping:
                    return
            try:
                self._expire_pending()
                self._expire_queue()
                self._replay()
            except Exception:
                self.metrics.callback_errors.inc()
                log.exception("router_worker_failed")
                time.sleep(1.0)  # a broken disk must not turn this into a spin

    def _next_wait(self) -> float | None:
        waits = []
        with self._lock:
            if self._timeouts:
                waits.append(self._timeouts[0].deadline - time.monotonic())
        expiry = self.queue.next_expiry()
        if expiry is not None:
            waits.append(expiry)
            upstream = self.upstream
            ready = upstream is not None and upstream.has_room() and self.directory.synced_now
            if ready and not self._replay_blocked:
                waits.append(self._bucket.wait_time())
        return max(0.0, min(waits)) if waits else None

    def _expire_pending(self) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            while self._timeouts:
                entry = self._timeouts[0]
                if self._pending.get(entry.corr) is not entry:
                    self._timeouts.popleft()  # forgotten already
                elif entry.deadline <= now:
                    self._timeouts.popleft()
                    del self._pending[entry.corr]
                    if not entry.replies:
                        expired.append(entry)
                else:
                    break
            self.metrics.pending.set(len(self._pending))
        for entry in expired:
            self._error(entry.route, entry.device, entry.op_id, wire.E_TIMEOUT)

    def _expire_queue(self) -> None:
        try:
            old = self.queue.expire()
        except QueueError:
            log.exception("queue_expire_failed")
            return
        for q in old:
            self._error(q.route, q.device, q.op_id, wire.E_DROPPED)
        if old:
            self._note_drops(len(old))
            self._sync_queue_metrics()

    def _replay(self) -> None:
        upstream = self.upstream
        sent = 0
        # Only once the directory is complete again, and only for services with a live
        # analyst: a request nobody has subscribed to yet would be silently lost.
        while self.queue.depth and self.directory.synced_now and upstream is not None and upstream.has_room():
            if self._bucket.wait_time() > 0:
                break
            batch = self.queue.take(1, self.directory.live())
            if not batch:  # what waits is for services with no analyst yet: sleep until a kick
                self._replay_blocked = True
                break
            self._bucket.take()
            q: Queued = batch[0]
            started = time.monotonic() - max(0.0, time.time() - q.at)
            if not self._send(q.route, q.device, q.service, q.op_id, q.frame, started):
                self._enqueue(q.route, q.device, q.service, q.op_id, q.frame)  # lost the race
                break
            sent += 1
        if sent:
            self._sync_queue_metrics()
            if not self.queue.depth:
                log.info("queue_drained")

    def _note_drops(self, n: int) -> None:
        """Logs drops at most once a second (a full queue drops on every new operation)."""
        self._drops += n
        now = time.monotonic()
        if now - self._drops_logged >= 1.0:
            log.warning("queue_dropped", extra={"count": self._drops, "depth": self.queue.depth})
            self._drops, self._drops_logged = 0, now

    def _sync_queue_metrics(self) -> None:
        self.metrics.queue_depth.set(self.queue.depth)
        self.metrics.queue_bytes.set(self.queue.bytes)


def _relayable(frame: bytes, op_id: bytes) -> tuple[str, bytes] | None:
    """(kind, frame to relay) for a well-formed RESULT or ERROR answering ``op_id``, else
    None. An ERROR code the gateway does not know becomes FAILED: a device is never handed
    a code its specification does not define (every ERROR means "in doubt" anyway)."""
    try:
        ftype, got = wire.frame_type(frame)
        if got != op_id:
            return None
        if ftype == wire.T_RESULT:
            wire.decode_result(frame)
            return "result", bytes(frame)
        if ftype == wire.T_ERROR and len(frame) == wire.PREFIX_LEN + 1:
            if frame[wire.PREFIX_LEN] in wire.ERROR_CODES:
                return "error", bytes(frame)
            return "error", bytes(wire.encode_error(op_id, wire.E_FAILED))
    except (wire.InvalidFrame, TypeError):
        pass
    return None


def _frame_is(frame: bytes, ftype: int, op_id: bytes) -> bool:
    try:
        t, got = wire.frame_type(frame)
    except (wire.InvalidFrame, TypeError):
        return False
    return t == ftype and got == op_id

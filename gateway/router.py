"""The router: every device frame in, every answer out.

``handle`` takes a frame from a device (MQTT or serial), checks its shape, size and the
device's rate, and then answers a QUERY from the directory, relays a TOPUP_REQUEST to the
bank, or forwards an OPERATION upstream (or to the store-and-forward queue while upstream
is down or busy). ``on_reply`` relays an analyst's answer to the device that asked.

The parts it dispatches to, one concern each: ``repeats`` (what was seen), ``window``
(operations waiting for an in-flight slot), ``awaiting`` (operations waiting for their
answer, and their deadlines), ``replay`` (pacing the backlog), ``replies`` (what may be
relayed), ``correlation`` (replies routed by themselves after a restart). One worker thread
sleeps until the next thing is due (an operation's deadline, the queue's age cap, a replay
token) or until it is woken, and at least once a second, which is how it notices that the
whole process was stopped (SIGSTOP, a suspended VM).

Deadlines travel with the operation: each has ``op_timeout_s`` from the moment its frame
came in (the device waits that long), and it is never published after that. A frame read
just after the process was stopped may have waited unseen for as long as the stop lasted,
so it is aged by that much: one that may be past its deadline is answered DROPPED instead
of being forwarded (its coin stays unspent and refundable).

Only prefixes and names are read: frames are never decrypted and never logged.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

from ecoin.gateway import repeats
from ecoin.gateway.awaiting import LATE_GRACE_S, Awaiting, Stragglers
from ecoin.gateway.correlation import Correlator
from ecoin.gateway.directory import Directory
from ecoin.gateway.limits import DeviceLimiter
from ecoin.gateway.metrics import ERROR_KIND, Metrics
from ecoin.gateway.queue import OpQueue, QueueError
from ecoin.gateway.records import Op, Pending, Query
from ecoin.gateway.replay import Replay
from ecoin.gateway.replies import frame_is, relayable
from ecoin.gateway.window import WindowWait
from ecoin.protocol import wire

log = logging.getLogger("ecoin.gateway.router")

Send = Callable[[str, bytes], bool]  # (device id, frame) -> handed to the transport?
RECENT_MAX = 50_000  # (device, op_id) pairs remembered to drop repeated operations
QUERIES_MAX = 1_000  # queries held until the directory is complete
QUERY_HOLD_S = 3.0  # at most this long: then the directory's view, whatever it is
TICK_S = 1.0  # the worker wakes at least this often
# Wall time the process spent neither on a CPU nor within its worker's longest wait: a
# longer quiet gap means it was stopped (SIGSTOP, a frozen cgroup, a paused VM). Busy time
# (a flood, a slow expiry, emulation) is CPU time, so it is never taken for a stop.
STALL_S = 3.0
# Frames read this soon after a stop may have waited through it: they are aged by it. A
# wrongly aged frame is only dropped unspent.
CATCHUP_S = 2.0


class UpstreamPort(Protocol):
    @property
    def ready(self) -> bool: ...
    def send(self, service: str, frame: bytes, corr: bytes, expiry_s: int) -> bool: ...
    def has_room(self) -> bool: ...


class TopupPort(Protocol):
    def submit(self, frame: bytes, answer: Callable[[bytes | None], None]) -> bool: ...


class Router:
    def __init__(
        self,
        *,
        directory: Directory,
        queue: OpQueue,
        metrics: Metrics,
        limiter: DeviceLimiter,
        upstream: UpstreamPort | None,
        routes: Mapping[str, Send],
        correlator: Correlator,
        topup: TopupPort | None = None,
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
        self.upstream = upstream
        self.routes = routes
        self.topup = topup
        self.correlator = correlator
        self.frame_max = frame_max
        self.op_timeout_s = op_timeout_s
        self.awaiting = Awaiting()
        self._recent = repeats.Recent(recent_max)
        self._topups = repeats.InFlight()
        self._window = WindowWait()
        self._replay = Replay(queue, directory, replay_rate, replay_burst)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stragglers = Stragglers()  # replies counted after a restart or a deadline
        self._held: deque[Query] = deque()
        self._tick = (time.monotonic(), time.process_time())  # the worker's last wake-up
        self._stall = (0.0, 0.0)  # (seconds stopped, monotonic end of the catch-up)
        self._wake = threading.Condition()
        self._kicked = False
        self._drops, self._drops_logged = 0, 0.0
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._sync_queue_metrics()

    # Life cycle.

    def start(self) -> None:
        self._tick = (time.monotonic(), time.process_time())
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
        if self._held and self.directory.synced_now:
            self._answer_held(None)
        if self._window:
            self._window.drain(self._send, self._has_room)
        if self.queue.depth:
            self.kick()

    def upstream_lost(self) -> None:
        """Operations waiting for a window slot were never sent: they go to the queue."""
        for op in self._window.take_all():
            self._enqueue(op)

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
                self._operation(Op(route, device, service, op_id, bytes(frame), started))
            elif ftype == wire.T_QUERY:
                service = wire.decode_query(frame)[1]
                self.metrics.frames_in["query"].inc()
                self._query(Query(route, device, op_id, service, started + QUERY_HOLD_S))
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

    def _query(self, q: Query) -> None:
        """Answered from the directory, unless it is still being learnt (the gateway just
        started or reconnected): then held until it is complete, for at most QUERY_HOLD_S,
        so a live service is not reported unavailable because the gateway was not ready."""
        if self.directory.synced_now or self.directory.is_live(q.service):
            self._status(q)
            return
        with self._lock:
            held = len(self._held) < QUERIES_MAX
            if held:
                self._held.append(q)
        if not held:
            self._status(q)
        elif len(self._held) == 1:
            self.kick()  # the worker answers it at its hold's end

    def _status(self, q: Query) -> None:
        live = self.directory.is_live(q.service)
        code = wire.S_LIVE if live else wire.S_UNAVAILABLE
        status = wire.encode_status(q.op_id, code, self.directory.price(q.service))
        self._answer(q.route, q.device, bytes(status), "status")

    def _answer_held(self, now: float | None) -> None:
        """Answers held queries: all of them (``now`` None: the directory is complete), or
        those whose hold has ended."""
        with self._lock:
            due = [q for q in self._held if now is None or q.until <= now]
            self._held = deque(q for q in self._held if now is not None and q.until > now)
        for q in due:
            self._status(q)

    def _quiet(self, now: float) -> tuple[float, float]:
        """(wall seconds, of them not on any CPU) since the worker's last wake-up. CPU time
        is the whole process's: it does not advance while the process is stopped."""
        tick, cpu = self._tick
        gap = now - tick
        return gap, gap - (time.process_time() - cpu)

    def _stalled(self, now: float) -> float:
        """How long a frame read now may have waited unseen: the length of a stop of the
        whole process that has just ended (0 normally)."""
        gap, quiet = self._quiet(now)
        if quiet > STALL_S:
            return gap  # the worker has not run since before the stop
        stopped, until = self._stall
        return stopped if now < until else 0.0

    def _operation(self, op: Op) -> None:
        self.metrics.frames_in["operation"].inc()
        stalled = self._stalled(op.started)
        if stalled:
            op = op._replace(started=op.started - stalled)
        if not self.directory.is_live(op.service):
            if self.directory.synced_now:  # refused, not remembered: a retry may pass
                self._error(op.route, op.device, op.op_id, wire.E_UNAVAILABLE)
                return
            if not self._recent.first_time(op.device, op.op_id):
                self.metrics.duplicates.inc()
                return
            self._enqueue(op)  # the directory is being learnt: replayed once it is, if live
            return
        if not self._recent.first_time(op.device, op.op_id):
            self.metrics.duplicates.inc()
            return
        backlog = bool(self.queue.depth)
        if not backlog and not self._window and self._send(op):
            return
        upstream = self.upstream
        if not backlog and upstream is not None and upstream.ready and self._window.push(op):
            # Connected, only the window is full: wait in memory for the next PUBACK.
            self._window.drain(self._send, self._has_room)  # a slot may have freed meanwhile
            return
        self._enqueue(op)

    def _topup(self, route: str, device: str, op_id: bytes, named: str, frame: bytes) -> None:
        """Relays a top-up to the bank, also an identical resend once the first relay has
        ended (repeats.py says why); the bank answers a resend with the same coins."""
        if named != device:  # a device may only top itself up
            raise wire.InvalidFrame("top-up for another device")
        key = repeats.key(device, op_id)
        if not self._topups.claim(key):
            self.metrics.duplicates.inc()
            return
        self.metrics.frames_in["topup"].inc()
        started = time.monotonic()

        def answer(response: bytes | None) -> None:
            self._topups.release(key)
            if response is None or not frame_is(response, wire.T_TOPUP_RESPONSE, op_id):
                self._error(route, device, op_id, wire.E_FAILED)
                return
            self._answer(route, device, response, "topup")
            self.metrics.latency.observe(time.monotonic() - started)

        if self.topup is None or not self.topup.submit(frame, answer):
            answer(None)

    # Upstream.

    def _has_room(self) -> bool:
        upstream = self.upstream
        return upstream is not None and upstream.has_room()

    def _send(self, op: Op) -> bool:
        """Publishes one operation with its deadline; True if it is handled (published, or
        answered DROPPED because its device no longer waits)."""
        upstream = self.upstream
        if upstream is None:
            return False
        now = time.monotonic()
        deadline = op.started + self.op_timeout_s
        left = deadline - now
        if left <= 0:  # never paid for after its device gave up: the coin stays refundable
            self._error(op.route, op.device, op.op_id, wire.E_DROPPED)
            return True
        corr = self.correlator.make(op.route, op.device, op.op_id, time.time() + left, next(self._seq))
        entry = Pending(corr, op.device, op.route, op.op_id, op.started, deadline)
        self.awaiting.add(entry)
        if not upstream.send(op.service, op.frame, corr, math.ceil(left)):
            self.awaiting.discard(entry)
            return False
        self.metrics.forwarded.inc()
        if self.awaiting.armed(entry):
            self.kick()  # the worker may be sleeping with no deadline at all
        return True

    def _enqueue(self, op: Op) -> None:
        at = time.time() - max(0.0, time.monotonic() - op.started)  # its age travels with it
        dropped = self.queue.put(op.device, op.route, op.service, op.op_id, op.frame, at)
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
        entry = self.awaiting.get(corr)
        if entry is None:
            self._orphan_reply(corr, frame)
            return
        relay = relayable(frame, entry.op_id)
        if relay is None:  # not an answer to this operation: ignore it, the deadline still runs
            self.metrics.malformed["reply"].inc()
            return
        if not self.awaiting.count_reply(entry):  # past its deadline, or had its share
            self.metrics.late_replies.inc()
            return
        kind, answer = relay
        self._answer(entry.route, entry.device, answer, kind)
        if entry.replies == 1:
            self.metrics.latency.observe(time.monotonic() - entry.started)

    def _orphan_reply(self, corr: bytes | None, frame: bytes) -> None:
        """A reply for an operation no longer in the waiting list: one published before a
        restart (kill -9, a crash), or one past its deadline (the gateway was stopped while
        the reply waited at the broker). Its correlation data says where it goes and until
        when; relayed if it is authentic for the reply's op_id, with the same bound per
        operation. After the deadline only a RESULT, for LATE_GRACE_S more: its device
        verifies it and settles the coin it holds in doubt (PROTOCOL 9); an ERROR then would
        tell it nothing. Later than that: dropped as late."""
        op_id = bytes(frame[2 : wire.PREFIX_LEN]) if len(frame) >= wire.PREFIX_LEN else b""
        route = self.correlator.open(corr, op_id) if op_id else None
        now = time.time()
        if route is None or route.deadline + LATE_GRACE_S <= now:
            self.metrics.late_replies.inc()
            return
        relay = relayable(frame, op_id)
        if relay is None:
            self.metrics.malformed["reply"].inc()
            return
        assert isinstance(corr, bytes)  # opened above
        late = route.deadline <= now
        ends = route.deadline + LATE_GRACE_S
        if (late and relay[0] != "result") or not self._stragglers.count(corr, ends, now):
            self.metrics.late_replies.inc()
            return
        kind, answer = relay
        self._answer(route.route, route.device, answer, kind)
        if late:
            self.metrics.late_relayed.inc()

    # Answers down.

    def _answer(self, route: str, device: str, frame: bytes, kind: str) -> None:
        send = self.routes.get(route)
        if send is None or not send(device, frame):
            self.metrics.undeliverable.inc()
            return
        self.metrics.frames_out[kind].inc()

    def _error(self, route: str, device: str, op_id: bytes, code: int) -> None:
        self.metrics.errors[ERROR_KIND[code]].inc()
        self._answer(route, device, bytes(wire.encode_error(op_id, code)), "error")

    # The worker: deadlines, the queue's age cap, replay, held queries, stalls.

    def _work(self) -> None:
        while True:
            self._note_tick()
            with self._wake:
                if self._stopping:
                    return
                if not self._kicked:
                    self._wake.wait(self._next_wait())
                if self._kicked:
                    self._replay.blocked = False
                self._kicked = False
                if self._stopping:
                    return
            try:
                self._note_tick()
                if self._held:
                    self._answer_held(None if self.directory.synced_now else time.monotonic())
                self._expire_pending()
                self._expire_queue()
                if self._replay.run(self._has_room, self._send, self._enqueue):
                    self._sync_queue_metrics()
            except Exception:
                self.metrics.callback_errors.inc()
                log.exception("router_worker_failed")
                time.sleep(1.0)  # a broken disk must not turn this into a spin

    def _note_tick(self) -> None:
        now = time.monotonic()
        gap, quiet = self._quiet(now)
        if quiet > STALL_S:
            self._stall = (gap, now + CATCHUP_S)
            log.warning("gateway_stalled", extra={"seconds": round(gap, 1)})
        self._tick = (now, time.process_time())

    def _next_wait(self) -> float:
        now = time.monotonic()
        deadline = self.awaiting.next_deadline()
        expiry = self.queue.next_expiry()
        replay = self._replay.wait_time(self._has_room()) if expiry is not None else None
        held = self._held[0].until - now if self._held else None
        due = None if deadline is None else deadline - now
        waits = [w for w in (due, expiry, replay, held) if w is not None]
        return max(0.0, min([TICK_S, *waits]))

    def _expire_pending(self) -> None:
        unanswered = self.awaiting.expire(time.monotonic())
        self.metrics.pending.set(len(self.awaiting))
        for entry in unanswered:
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

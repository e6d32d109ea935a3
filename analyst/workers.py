"""Analysers run in child processes, one request at a time each, with a time limit.

A third-party analyser is code we did not write: it may loop forever, crash the interpreter
or eat memory. So it never runs in the service's process. Each worker is a process of its
own (a fresh interpreter: nothing of the service's threads or keys is inherited); a
request that overruns its time limit gets its worker killed and replaced, a worker that
dies is replaced, and the service keeps serving.

The worker does everything between the decrypted readings and the result to encrypt:
parsing, the checks of PROTOCOL.md section 5 and the analyser's schema, the analysis and
the encoding of the result. That work is spread over the cores instead of holding the
service's GIL.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .discovery import Discovery, discover
from .readings import AnalyserError, InvalidReadings, encode_result, parse_readings

log = logging.getLogger("ecoin.analyst.workers")

_OK, _INVALID, _FAILED = 0, 1, 2


class AnalysisFailed(AnalyserError):
    """The analyser raised, returned something unusable, crashed, or ran out of time."""


class AnalysisTimeout(AnalysisFailed):
    pass


# The child side: ``python -m ecoin.analyst.workers OPTIONS_JSON MEMORY_MB``. Requests and
# answers are length-prefixed on stdin and on a private copy of stdout; the analyser's own
# prints go to stderr, so they cannot corrupt the stream.

_LEN = struct.Struct(">I")
_READY = b"R"  # the one byte a worker writes once it can take requests
_START_S = 60.0  # how long a worker may take to start (a loaded board-sized host is slow)


def _limit_memory(megabytes: int) -> None:
    if megabytes > 0:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _answer(
    found: Discovery, options: Mapping[str, Mapping[str, Any]], service: str, data: bytes
) -> tuple[int, bytes]:
    analyser = found.analysers.get(service)
    if analyser is None:
        return _FAILED, f"no analyser {service!r} in the worker".encode()
    try:
        if options.get(service):
            analyser = analyser.configured(options[service])
        readings = parse_readings(data, analyser.schema)
    except InvalidReadings as exc:
        return _INVALID, str(exc).encode()
    except AnalyserError as exc:
        return _FAILED, str(exc).encode()
    try:
        return _OK, encode_result(service, analyser.run(readings))
    except AnalyserError as exc:
        return _FAILED, str(exc).encode()
    except MemoryError:
        return _FAILED, f"analyser {service} ran out of memory".encode()
    except Exception as exc:  # the analyser's own bug: reported, the worker lives on
        # The type only: an analyser's message may quote the readings it choked on.
        return _FAILED, f"analyser {service} raised {type(exc).__name__}".encode()


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    """A worker's main loop: (service, readings) in, (status, result or reason) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops us, not a Ctrl-C
    out = os.dup(1)
    os.dup2(2, 1)
    options = json.loads(argv[0]) if argv else {}
    found = discover()
    _limit_memory(int(argv[1]) if len(argv) > 1 else 0)
    try:
        _write_all(out, _READY)  # start-up is not charged to the first analysis's time limit
        return _serve(out, found, options)
    except BrokenPipeError:
        return 0  # the service stopped while we started or answered: nobody is left to tell


def _serve(out: int, found: Discovery, options: Mapping[str, Mapping[str, Any]]) -> int:
    while True:
        try:
            (n,) = _LEN.unpack(_read_exact(0, _LEN.size))
            request = _read_exact(0, n)
        except EOFError:
            return 0  # the service closed the pipe: time to go
        name_len = request[0]
        service, data = request[1 : 1 + name_len].decode(), request[1 + name_len :]
        status, body = _answer(found, options, service, data)
        _write_all(out, _LEN.pack(len(body) + 1) + bytes((status,)) + body)


# The service side.


class _Worker:
    def __init__(self, options: Mapping[str, Mapping[str, Any]], memory_mb: int) -> None:
        cmd = [sys.executable, "-m", "ecoin.analyst.workers", json.dumps(options), str(memory_mb)]
        # The child sees our import path, so analysers found here are found there too.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
        assert self.proc.stdin and self.proc.stdout  # both are pipes (for mypy)
        self.w, self.r = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.ready = False

    def wait_ready(self, timeout: float = _START_S) -> None:
        """Waits once for the worker's start-up (imports, discovery) to finish."""
        if self.ready:
            return
        if not self._wait(time.monotonic() + timeout) or self._read(1) != _READY:
            raise EOFError  # too slow or dead: replaced like any dead worker
        self.ready = True

    def send(self, service: str, data: bytes) -> None:
        name = service.encode()
        _write_all(self.w, _LEN.pack(1 + len(name) + len(data)) + bytes((len(name),)) + name + data)

    def receive(self, timeout: float) -> tuple[int, bytes] | None:
        """The answer, or None if none came in time. EOFError if the worker died."""
        deadline = time.monotonic() + timeout
        head = b""
        while len(head) < _LEN.size:
            if not self._wait(deadline):
                return None
            head += self._read(_LEN.size - len(head))
        (n,) = _LEN.unpack(head)
        body = bytearray()
        while len(body) < n:
            if not self._wait(deadline):
                return None
            body += self._read(n - len(body))
        return body[0], bytes(body[1:])

    def _wait(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.r], [], [], max(0.0, deadline - time.monotonic()))
        return bool(ready)

    def _read(self, n: int) -> bytes:
        chunk = os.read(self.r, n)
        if not chunk:
            raise EOFError
        return chunk

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()


class WorkerPool:
    """``size`` worker processes; ``run`` blocks the calling thread until its answer."""

    def __init__(
        self,
        size: int,
        timeout_s: float,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        memory_mb: int = 0,
        on_time: Callable[[str, float], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.timeout_s = timeout_s
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.memory_mb = memory_mb
        self.on_time = on_time  # (service, seconds in the worker), not counting the wait for one
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.replaced = 0  # workers killed or found dead and replaced

    def start(self) -> WorkerPool:
        for _ in range(self.size):
            self._idle.put(self._spawn())
        return self

    def _spawn(self) -> _Worker:
        w = _Worker(self.options, self.memory_mb)
        with self._lock:
            self._all.add(w)
        return w

    def _replace(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._all.discard(w)
            self.replaced += 1
            closed = self._closed
        if not closed:
            self._idle.put(self._spawn())

    def run(self, service: str, data: bytes) -> bytes:
        """The encoded result of ``service`` on the readings ``data``. Raises InvalidReadings
        (the payload) or AnalysisFailed (the analyser, its time limit, its process)."""
        if self._closed:
            raise AnalysisFailed("the worker pool is closed")
        w = self._take(service, data)
        started = time.monotonic()
        try:
            answer = w.receive(self.timeout_s)
        except (EOFError, OSError):
            code = w.proc.wait(5)
            self._replace(w)
            raise AnalysisFailed(f"analyser {service} killed its worker (exit code {code})") from None
        if answer is None:
            self._replace(w)
            raise AnalysisTimeout(
                f"analyser {service} exceeded its {self.timeout_s}s limit "
                f"({time.monotonic() - started:.1f}s); worker replaced"
            )
        self._idle.put(w)
        if self.on_time:
            self.on_time(service, time.monotonic() - started)
        status, body = answer
        if status == _OK:
            return body
        if status == _INVALID:
            raise InvalidReadings(body.decode(errors="replace"))
        raise AnalysisFailed(body.decode(errors="replace"))

    def _take(self, service: str, data: bytes) -> _Worker:
        """An idle worker that took the request; dead ones (killed from outside, out of
        memory while idle) are replaced on the way."""
        for _ in range(self.size + 1):
            w = self._idle.get()
            try:
                if w.proc.poll() is not None:
                    raise BrokenPipeError
                w.wait_ready()
                w.send(service, data)
                return w
            except (OSError, EOFError):
                self._replace(w)
        raise AnalysisFailed("no worker process stays alive")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.close_pipes()  # the worker reads EOF and exits
        deadline = time.monotonic() + 2
        for w in workers:
            try:
                w.proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self._all]

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_size() -> int:
    return max(1, os.cpu_count() or 1)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

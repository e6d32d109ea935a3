"""The gateway's pieces on their own: framing, the queue's caps, token buckets, the
directory's generations, the count of replies outside the waiting list, and configuration
errors."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ecoin.common.config import ConfigError
from ecoin.gateway import brokerconf, framing
from ecoin.gateway import config as gwconfig
from ecoin.gateway.awaiting import REPLIES_MAX, Stragglers
from ecoin.gateway.backoff import Backoff
from ecoin.gateway.directory import Directory, terms_of
from ecoin.gateway.limits import DeviceLimiter, TokenBucket
from ecoin.gateway.queue import OpQueue


@pytest.mark.parametrize("n", [1, 2, 253, 254, 255, 508, 509, 4704])
def test_cobs_round_trip(n: int) -> None:
    rng = random.Random(n)
    for data in (os.urandom(n), bytes(n), bytes(rng.choice((0, 1, 255)) for _ in range(n))):
        encoded = framing.cobs_encode(data)
        assert 0 not in encoded
        assert framing.cobs_decode(encoded) == data


def test_decoder_reassembles_and_drops_corruption() -> None:
    frames = [os.urandom(random.randint(1, 4700)) for _ in range(30)]
    stream = bytearray(b"".join(framing.encode(f) for f in frames))
    stream[len(framing.encode(frames[0])) + 3] ^= 0x10  # corrupt the second frame
    decoder = framing.Decoder()
    got = [f for i in range(0, len(stream), 97) for f in decoder.feed(bytes(stream[i : i + 97]))]
    assert got == [frames[0], *frames[2:]]
    assert decoder.dropped == 1


def test_decoder_bounds_an_endless_chunk() -> None:
    decoder = framing.Decoder()
    for _ in range(100):
        assert list(decoder.feed(b"\x07" * 10_000)) == []
    assert len(decoder._buf) == 0  # nothing kept of an overlong chunk
    assert list(decoder.feed(b"\0" + framing.encode(b"ok"))) == [b"ok"]
    assert decoder.dropped == 1


def test_queue_drops_oldest_first_under_the_byte_cap(tmp_path: Path) -> None:
    q = OpQueue(tmp_path / "q.sqlite", max_bytes=1000, max_age_s=60)
    for i in range(10):
        dropped = q.put("d", "mqtt", "svc", bytes([i]) * 16, bytes(300))
        assert q.bytes <= 1000
        assert [x.op_id[0] for x in dropped] == ([i - 3] if i >= 3 else [])
    assert [x.op_id[0] for x in q.take(10)] == [7, 8, 9]
    assert q.depth == 0 and q.bytes == 0


def test_queue_age_cap_and_restart(tmp_path: Path) -> None:
    now = [1000.0]
    q = OpQueue(tmp_path / "q.sqlite", 10_000, max_age_s=60, clock=lambda: now[0])
    q.put("a", "mqtt", "svc", bytes(16), b"x" * 10)
    now[0] += 30
    q.put("b", "serial:b", "svc", bytes(16), b"y" * 10)
    assert q.next_expiry() == pytest.approx(30)
    now[0] += 31
    assert [x.device for x in q.expire()] == ["a"]
    q.close()
    again = OpQueue(tmp_path / "q.sqlite", 10_000, max_age_s=60, clock=lambda: now[0])
    assert (again.depth, again.bytes) == (1, 10)  # survives a restart
    assert [(x.device, x.route) for x in again.take(5, frozenset({"svc"}))] == [("b", "serial:b")]


def test_queue_take_only_live_services(tmp_path: Path) -> None:
    q = OpQueue(tmp_path / "q.sqlite", 10_000, 60)
    q.put("a", "mqtt", "gone", bytes(16), b"1")
    q.put("a", "mqtt", "live", bytes(16), b"2")
    assert q.take(5, frozenset()) == []
    assert [x.frame for x in q.take(5, frozenset({"live"}))] == [b"2"]
    assert q.depth == 1


def test_oversized_frame_is_refused_by_the_queue(tmp_path: Path) -> None:
    q = OpQueue(tmp_path / "q.sqlite", 100, 60)
    assert len(q.put("a", "mqtt", "s", bytes(16), bytes(101))) == 1
    assert q.depth == 0


def test_token_bucket() -> None:
    now = [0.0]
    b = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert b.wait_time() == pytest.approx(0.1)
    now[0] += 0.1
    assert b.take() and not b.take()


def test_device_limiter_is_per_device_and_bounded() -> None:
    limiter = DeviceLimiter(rate=0.001, burst=2, max_devices=10)
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    for i in range(100):
        limiter.allow(f"x{i}")
    assert len(limiter._buckets) == 10


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(0.5, 8.0)
    delays = [b.next() for _ in range(10)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(4.0 <= d <= 8.0 for d in delays[5:])
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next() <= 0.5


def test_directory_generations() -> None:
    d = Directory()
    d.announce("ecoin/svc/avg/analyst/a1", b"{}")
    d.announce("ecoin/svc/avg/analyst/a2", b"{}")
    d.announce("ecoin/svc/avg/analyst/a1", b"")
    assert d.is_live("avg")
    d.announce("ecoin/svc/avg/analyst/a2", b"")
    assert not d.is_live("avg")
    assert not d.announce("ecoin/svc/BAD/analyst/a1", b"{}")
    assert not d.announce("ecoin/svc/avg/op", b"{}")
    d.announce("ecoin/svc/sum/analyst/s1", b"{}")
    d.announce("ecoin/svc/old/analyst/o1", b"{}")
    d.reconnected()  # after a reconnect only what is announced again survives the sync
    assert d.is_live("old") and not d.synced_now
    d.announce("ecoin/svc/sum/analyst/s1", b"{}")
    d.synced()
    assert d.is_live("sum") and not d.is_live("old") and d.synced_now


def test_directory_undoes_removals_just_before_a_connection_loss() -> None:
    d = Directory()
    d.announce("ecoin/svc/avg/analyst/a1", b"{}")
    d.announce("ecoin/svc/avg/analyst/a1", b"")  # a will, sent as the broker shuts down
    assert not d.is_live("avg")
    d.lost()
    assert d.is_live("avg")


def test_stragglers_bound_relays_per_operation_and_memory() -> None:
    late = Stragglers(cap=2)
    assert [late.count(b"a", 100.0, 0.0) for _ in range(REPLIES_MAX + 1)] == [True] * REPLIES_MAX + [False]
    assert late.count(b"b", 50.0, 1.0)
    assert not late.count(b"c", 100.0, 2.0)  # full: refused, nothing forgotten early
    assert not late.count(b"a", 100.0, 3.0)  # still counted: its bound holds
    assert late.count(b"c", 100.0, 50.0)  # b's grace ended: its room is free again
    assert len(late) == 2


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        gwconfig.from_table({"nope": 1})
    with pytest.raises(ConfigError, match="expected float"):
        gwconfig.from_table({"op_timeout_s": "soon"})
    with pytest.raises(ConfigError, match="appears twice"):
        gwconfig.from_table({"serial": [{"device_id": "a", "path": "/x"}, {"device_id": "a", "path": "/y"}]})
    with pytest.raises(ConfigError, match="device id"):
        gwconfig.from_table({"serial": [{"device_id": "a/b", "path": "/x"}]})
    with pytest.raises(ConfigError, match="gateway_id 'bad id!' is not 1 to"):
        gwconfig.from_table({"gateway_id": "bad id!"})
    with pytest.raises(ConfigError, match="frame_max"):
        gwconfig.from_table({"limits": {"frame_max": 10_000}})
    with pytest.raises(ConfigError, match="no such"):
        gwconfig.load(tmp_path / "missing.toml")


def test_password_hash_matches_mosquitto_format() -> None:
    import base64
    import hashlib

    line = brokerconf.hash_password("secret", salt=b"0123456789ab")
    _, seven, iterations, salt, digest = line.split("$")
    assert (seven, iterations) == ("7", "101")
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == expected


def test_announced_terms_are_read_defensively() -> None:
    assert terms_of(b'{"price": 3, "version": "2", "other": 1}') == {"price": 3, "version": "2"}
    for bad in (
        b"not json",
        b"[1]",
        b'{"price": 0}',
        b'{"price": 256}',
        b'{"price": "3"}',
        b'{"price": true}',
    ):
        assert terms_of(bad)["price"] == 1  # an analyst before prices, or a broken announcement

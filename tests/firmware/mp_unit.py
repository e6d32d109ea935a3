# ruff: noqa: UP031 - MicroPython code: %-formatting, as in the firmware
# The firmware's unit tests, run UNDER MICROPYTHON (the unix port) on the deployed .mpy
# modules: `micropython mp_unit.py GROUP WORKDIR [VECTORS]`, MICROPYPATH = the flash dir.
# Plain asserts-free checks: each test prints "PASS name" or "FAIL name: why", then a
# summary line "N passed, M failed". Driven by test_micropython_units.py.
import binascii
import json
import os
import struct
import sys
import time

PASSED = []
FAILED = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(fn):
    try:
        fn()
    except Exception as exc:  # report and go on: every test runs
        FAILED.append(fn.__name__)
        print("FAIL %s: %s %s" % (fn.__name__, type(exc).__name__, exc))
        return
    PASSED.append(fn.__name__)
    print("PASS " + fn.__name__)


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type:
        return True
    return False


# Coin store ------------------------------------------------------------------------------

import coinstore  # noqa: E402

COINS = [bytes([i]) * 32 for i in range(1, 11)]


def fresh_store(n=10):
    for name in os.listdir():
        os.remove(name)
    with open("coins.0.bin", "wb") as f:
        for c in COINS[:n]:
            f.write(c)
    with open("state.bin", "wb") as f:
        f.write(struct.pack(coinstore.FMT, b"ECS1", 0, 0, n, 0, 0, bytes(16), bytes(32)))
    return reopen()


def reopen():
    import start

    return start.open_store()


def state():
    with open("state.bin", "rb") as f:
        return struct.unpack(coinstore.FMT, f.read())


def doubts():
    try:
        with open("doubt.bin", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [(raw[p : p + 16], raw[p + 16 : p + 48], raw[p + 48]) for p in range(0, len(raw) - 63, 64)]


def test_take_records_the_coin_before_returning_it():
    s = fresh_store()
    op = b"A" * 16
    coin = bytes(s.take(op))
    check(coin == COINS[0], "first coin")
    st = state()
    check(
        st[2] == 1 and st[5] == 1 and st[6] == op and st[7] == coin, "state.bin has next=1 and the pending op"
    )
    s.spent()
    st = state()
    check(st[2] == 1 and st[5] == 0, "spent clears the pending op")
    check(bytes(s.take(b"B" * 16)) == COINS[1], "second coin")
    check(s.left() == 8, "8 left")


def test_peek_changes_nothing_until_take():
    s = fresh_store()
    before = state()
    check(bytes(s.peek()) == COINS[0] and state() == before, "peek writes nothing")
    s = reopen()  # an operation abandoned before take (e.g. out of memory while sealing)
    check(bytes(s.peek()) == COINS[0], "the coin is still the next one")
    check(bytes(s.take(b"T" * 16)) == COINS[0] and state()[2] == 1, "take commits it")


def test_doubt_appends_op_id_coin_and_reason():
    s = fresh_store()
    s.take(b"C" * 16)
    s.doubt(coinstore.R_TIMEOUT)
    check(doubts() == [(b"C" * 16, COINS[0], coinstore.R_TIMEOUT)], "one record")
    check(state()[5] == 0, "no pending op")
    check(s.doubt_count() == 1, "count")


def test_no_coins_left_raises():
    s = fresh_store(2)
    s.take(b"1" * 16)
    s.spent()
    s.take(b"2" * 16)
    s.spent()
    check(raises(coinstore.NoCoins, s.take, b"3" * 16), "NoCoins")
    check(state()[2] == 2, "cursor unchanged")


def test_restart_with_a_pending_coin_puts_it_in_doubt_once():
    s = fresh_store()
    s.take(b"P" * 16)
    s = reopen()  # power lost while the operation was in flight
    check(doubts() == [(b"P" * 16, COINS[0], coinstore.R_RESTART)], "in doubt")
    check(s.op_id is None and state()[5] == 0 and s.next == 1, "cleared, cursor kept")
    reopen()
    check(len(doubts()) == 1, "a second restart adds nothing")
    check(bytes(s.take(b"Q" * 16)) == COINS[1], "the coin is never taken again")


def test_power_loss_between_record_and_state_adds_no_duplicate():
    s = fresh_store()
    s.take(b"D" * 16)
    with open("state.bin", "rb") as f:
        pending = f.read()
    s.doubt(coinstore.R_BAD_TAG)
    with open("state.bin", "wb") as f:  # as if power failed before the state was replaced
        f.write(pending)
    reopen()
    check(doubts() == [(b"D" * 16, COINS[0], coinstore.R_BAD_TAG)], "one record, first reason")


def test_torn_doubt_record_is_trimmed():
    s = fresh_store()
    s.take(b"E" * 16)
    s.doubt(5)
    with open("doubt.bin", "ab") as f:
        f.write(b"torn record")
    s = reopen()
    check(os.stat("doubt.bin")[6] == 64 and doubts()[0][0] == b"E" * 16, "whole records kept")
    s.take(b"F" * 16)
    s.doubt(1)
    check([d[0] for d in doubts()] == [b"E" * 16, b"F" * 16], "appends stay aligned")


def test_an_operation_takes_its_price_in_coins_and_puts_them_all_in_doubt():
    s = fresh_store()
    s.take(b"A" * 16)
    s.spent()
    check(bytes(s.peek(3)) == b"".join(COINS[1:4]), "peek 3: the next three, back to back")
    check(bytes(s.take(b"M" * 16, 3)) == b"".join(COINS[1:4]), "take 3")
    check(state()[2] == 4 and state()[5] == 3 and state()[7] == COINS[1], "3 pending, first coin in state")
    s.doubt(coinstore.R_TIMEOUT)
    check(doubts() == [(b"M" * 16, c, coinstore.R_TIMEOUT) for c in COINS[1:4]], "one record per coin")
    check(raises(coinstore.NoCoins, s.peek, 7), "7 of 6 left: NoCoins")
    check(s.left() == 6, "nothing taken")


def test_an_operation_charged_less_keeps_only_the_coins_beyond_paid_in_doubt():
    s = fresh_store()
    s.take(b"O" * 16, 3)
    s.doubt(coinstore.R_OVERPAID, 2)  # the result said "paid": 2
    check(doubts() == [(b"O" * 16, COINS[2], coinstore.R_OVERPAID)], "only the third coin")
    check(s.op_id is None and state()[5] == 0 and s.left() == 7, "the operation is over")


def test_restart_puts_every_coin_of_the_pending_operation_in_doubt_once():
    s = fresh_store()
    s.take(b"R" * 16, 4)
    with open("state.bin", "rb") as f:
        pending = f.read()
    s.doubt(coinstore.R_BAD_TAG)
    with open("doubt.bin", "rb") as f:
        two = f.read(128)
    with open("doubt.bin", "wb") as f:  # power lost after two of the four records
        f.write(two)
    with open("state.bin", "wb") as f:
        f.write(pending)
    s = reopen()
    check([d[1] for d in doubts()] == COINS[:4], "the other two added, none twice")
    check(s.op_id is None and s.next == 4 and state()[5] == 0, "cleared")
    reopen()
    check(len(doubts()) == 4, "a second restart adds nothing")


def test_interrupted_rename_and_orphans_are_repaired():
    fresh_store()
    os.rename("state.bin", "state.tmp")  # FAT: the old file removed, the new one not renamed
    with open("coins.1.bin", "wb") as f:
        f.write(b"x" * 64)  # a top-up cut before its state switch
    s = reopen()
    check(s.left() == 10, "state recovered from state.tmp")
    check(sorted(os.listdir()) == ["coins.0.bin", "state.bin"], "orphans removed: %s" % os.listdir())


def test_settled_records_leave_the_doubt_store():
    s = fresh_store()
    for op in (b"1" * 16, b"2" * 16, b"3" * 16):
        s.take(op)
        s.doubt(coinstore.R_TIMEOUT)
    with open(coinstore.SETTLED, "wb") as f:
        f.write(b"3" * 16 + b"1" * 16 + b"x" * 16)  # x: not a record here
    reopen()
    check([d[0] for d in doubts()] == [b"2" * 16], "only the unsettled record stays")
    check(coinstore.SETTLED not in os.listdir(), "the list is consumed")


def test_a_late_result_finds_its_coin_once_and_settles_it():
    import late

    s = fresh_store()
    ops = [bytes([65 + i]) * 16 for i in range(10)]
    for op in ops[:9]:
        s.take(op)
        s.doubt(coinstore.R_TIMEOUT)
    check(late.doubted(s, ops[8]) == COINS[8] and late.doubted(s, ops[0]) == COINS[0], "coins of records")
    check(late.doubted(s, ops[9]) is None and late.doubted(s, b"z" * 16) is None, "no record, no coin")
    with open(coinstore.SETTLED, "ab") as f:
        f.write(b"torn")  # an append cut by a power loss
    late.settle(ops[8])
    check(os.stat(coinstore.SETTLED)[6] == 32, "the torn entry is padded over: entries stay aligned")
    check(
        late.doubted(s, ops[8]) is None and late.doubted(s, ops[7]) == COINS[7],
        "a settled one is found no more",
    )
    reopen()
    check([d[0] for d in doubts()] == ops[:8], "the next boot drops the settled record")


def test_corrupt_state_is_refused():
    fresh_store()
    with open("state.bin", "wb") as f:
        f.write(b"junk")
    try:
        reopen()
    except Exception as exc:  # repair.py's: app.py's cannot_start tells it by its name
        check(type(exc).__name__ == "ConfigError", "ConfigError, not %r" % (exc,))
        return
    check(False, "refused")


def test_topup_adds_coins_after_the_unused_ones():
    import topup

    s = fresh_store(4)
    s.take(b"G" * 16)
    s.spent()
    topup.add(s, b"\xaa" * 32 + b"\xbb" * 32)
    check(s.gen == 1 and s.next == 0 and s.left() == 5, "new generation with 5 coins")
    check(sorted(os.listdir()) == ["coins.1.bin", "state.bin"], "old coin file removed")
    got = []
    while s.left():
        got.append(bytes(s.take(b"H" * 16)))
        s.spent()
    check(got == COINS[1:4] + [b"\xaa" * 32, b"\xbb" * 32], "order: unused, then new")
    check(reopen().left() == 0, "state survives a restart")


# Serial link -------------------------------------------------------------------------------

import serial_link  # noqa: E402


class Stream:
    def __init__(self, data=b"", chunk=7):
        self.out = bytearray()
        self.data = bytearray(data)
        self.chunk = chunk

    def write(self, buf):
        self.out.extend(buf)
        return len(buf)

    def readinto(self, buf):
        n = min(len(buf), self.chunk, len(self.data))
        if not n:
            return None
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def test_crc32_matches_zlib():
    out = bytearray(4)
    serial_link.crc32_into(b"123456789", out)
    check(out == b"\xcb\xf4\x39\x26", "check value")
    for n in (0, 1, 3, 64, 255, 1000):
        data = os.urandom(n)
        serial_link.crc32_into(data, out)
        check(out == struct.pack(">I", binascii.crc32(data) & 0xFFFFFFFF), "length %d" % n)
        slow = bytes(out)
        serial_link.crc32(data, out)
        check(out == slow, "fast path agrees")


def test_cobs_decodes_known_vectors():
    for enc, dec in (
        (b"\x01\x01", b"\x00"),
        (b"\x03\x11\x22\x02\x33", b"\x11\x22\x00\x33"),
        (b"\x01\x01\x01", b"\x00\x00"),
        (b"\x05\x11\x22\x33\x44", b"\x11\x22\x33\x44"),
    ):
        buf = bytearray(enc)
        n = serial_link.cobs_decode(buf, len(buf))
        check(buf[:n] == dec, "vector %s" % binascii.hexlify(enc))
    check(serial_link.cobs_decode(bytearray(b"\x05\x11"), 2) == -1, "block past the end")


SERIAL_FRAMES = [
    b"\x00",
    b"\x01" * 300,
    b"\x00" * 20,
    bytes(range(256)) * 3,
    b"\x07" * 254,
    b"\x07" * 253 + b"\x00",
    os.urandom(1500),
]


def test_serial_frames_round_trip_in_any_chunking():
    for chunk in (1, 7, 128):
        tx = Stream()
        link = serial_link.SerialLink(tx)
        for f in SERIAL_FRAMES:
            link.publish(None, f)
        check(tx.out.count(b"\x00") == len(SERIAL_FRAMES), "one zero byte per frame")
        got = []
        rx = serial_link.SerialLink(Stream(tx.out, chunk))
        rx.on_message = lambda topic, frame, got=got: got.append(bytes(frame))
        for _ in range(len(SERIAL_FRAMES) * 2):
            rx.poll(0)
        check(got == SERIAL_FRAMES, "frames back (chunk %d)" % chunk)
        check(rx.dropped == 0 and rx.frames == len(SERIAL_FRAMES), "counters")


def test_serial_drops_bad_crc_and_overlong_frames():
    tx = Stream()
    link = serial_link.SerialLink(tx)
    link.publish(None, b"good frame")
    bad = bytearray(tx.out)
    bad[3] ^= 0x40
    tx.out = bytearray()
    link.publish(None, b"after")
    small = serial_link.SerialLink(Stream(bytes(bad) + b"\x05" * 200 + b"\x00" + tx.out), 64)
    got = []
    small.on_message = lambda topic, frame: got.append(bytes(frame))
    for _ in range(50):
        small.poll(0)
    check(got == [b"after"], "only the good frame: %s" % got)
    check(small.dropped == 2, "two dropped, counted: %d" % small.dropped)


def test_serial_writes_encoded_frames_to_file():
    # For the CPython side: the gateway's decoder must read what the device writes.
    tx = Stream()
    link = serial_link.SerialLink(tx)
    for f in SERIAL_FRAMES:
        link.publish(None, f)
    with open("serial.bin", "wb") as f:
        f.write(tx.out)


def test_serial_reads_gateway_frames():
    # Written by the CPython side with ecoin.gateway.framing.encode.
    with open("gateway.json") as f:
        want = [binascii.unhexlify(x) for x in json.load(f)]
    with open("gateway.bin", "rb") as f:
        data = f.read()
    got = []
    rx = serial_link.SerialLink(Stream(data, 100))
    rx.on_message = lambda topic, frame: got.append(bytes(frame))
    while rx.stream.data:
        rx.poll(0)
    check(got == want and rx.dropped == 1, "frames from the gateway: %d, dropped %d" % (len(got), rx.dropped))


# MQTT packets ------------------------------------------------------------------------------

import mqtt  # noqa: E402


class FakeSock:
    """Records what the client writes; answers from a script. A PUBLISH sent with DUP is
    acknowledged when `ack_dup` is set (to test retransmission)."""

    def __init__(self):
        self.out = bytearray()
        self.inq = bytearray()
        self.ack_dup = False
        self.closed = False

    def settimeout(self, t):
        pass

    def connect(self, addr):
        pass

    def setsockopt(self, *a):
        pass

    def close(self):
        self.closed = True

    def write(self, buf):
        buf = bytes(buf)
        if self.ack_dup and buf[0] == 0x3A:
            self.inq.extend(b"\x40\x02" + buf[-2:])
        self.out.extend(buf)
        return len(buf)

    def readinto(self, mv):
        n = min(len(mv), len(self.inq))
        if not n:
            return None
        mv[:n] = self.inq[:n]
        self.inq = self.inq[n:]
        return n


class Poller:
    def __init__(self, net):
        self.net = net

    def register(self, s, ev):
        pass

    def poll(self, timeout):
        return [(self.net.sock, 1)] if self.net.sock.inq else []


class FakeNet:
    """Stands in for both the socket and the select modules."""

    SOCK_STREAM = 1
    POLLIN = 1

    def __init__(self):
        self.sock = FakeSock()
        self.fail = None

    def getaddrinfo(self, host, port, *a):
        if self.fail:
            raise OSError(self.fail)
        return [(2, 1, 6, "", (host, port))]

    def socket(self):
        return self.sock

    def poll(self):
        return Poller(self)


def client(**kw):
    net = FakeNet()
    mqtt.socket = net
    mqtt.select = net
    logs = []
    c = mqtt.Client(
        "dev1",
        "broker",
        1883,
        kw.pop("user", "dev1"),
        kw.pop("password", "pw"),
        30,
        None,
        kw.pop("io_timeout", 0.05),
        kw.pop("rx_size", 256),
        log=logs.append,
        **kw,
    )
    return c, net.sock, logs, net


def test_put_length():
    buf = bytearray(4)
    for n, enc in (
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
    ):
        p = mqtt.put_length(buf, 0, n)
        check(buf[:p] == enc, "length %d" % n)


def test_connect_packet_and_resubscribe():
    c, s, logs, _ = client()
    c.subs.append(b"ecoin/dev/dev1/down")
    s.inq.extend(b"\x20\x02\x00\x00" + b"\x90\x03\x00\x01\x01")
    check(c.ensure(), "connected")
    connect = b"\x10\x1a\x00\x04MQTT\x04\xc0\x00\x1e\x00\x04dev1\x00\x04dev1\x00\x02pw"
    sub = b"\x82\x18\x00\x01\x00\x13ecoin/dev/dev1/down\x01"
    check(s.out == connect + sub, "CONNECT then SUBSCRIBE: %s" % binascii.hexlify(s.out))
    check(c.connects == 1 and "mqtt: connected to broker:1883" in logs, "counted and said")


def test_connect_refused_is_reported_and_backed_off():
    c, s, logs, _ = client(user=None, password=None)
    s.inq.extend(b"\x20\x02\x00\x05")
    check(not c.ensure() and c.sock is None, "not connected")
    check(s.out[:14] == b"\x10\x10\x00\x04MQTT\x04\x00\x00\x1e\x00\x04", "no credentials flags")
    check("not authorised" in logs[-1] and "attempt 1" in logs[-1], logs[-1])
    check(not c.ensure(), "no second attempt before the backoff")
    check(len(logs) == 1, "nothing tried")


def test_backoff_grows_with_jitter_and_is_capped():
    c, s, logs, net = client()
    net.fail = 111
    delays = []
    for _ in range(12):
        c._next_try = time.ticks_ms()
        c.ensure()
        delays.append(int(logs[-1].split("next in ")[1].split()[0]))
        if len(delays) == 6:  # the first minute of the outage is over: longer pauses
            c._down = time.ticks_add(time.ticks_ms(), -mqtt.QUICK_MS)
    for i, d in enumerate(delays):
        top = min(2000 if i < 6 else 30000, 250 << min(i + 1, 8))
        check(top // 2 <= d <= top, "attempt %d: %d ms not in [%d, %d]" % (i + 1, d, top // 2, top))
    check(delays[-1] >= 15000, "capped at 30 s after the first minute: %r" % (delays,))
    check("unreachable" in logs[0] and "111" in logs[0], logs[0])


def connected(**kw):
    c, s, logs, net = client(**kw)
    s.inq.extend(b"\x20\x02\x00\x00")
    check(c.ensure(), "connected")
    s.out = bytearray()
    return c, s, logs


def test_qos1_publish_bytes_and_puback():
    c, s, logs = connected()
    s.inq.extend(b"\x40\x02\x00\x01")
    check(c.publish(b"a/b", b"hi"), "acknowledged")
    check(s.out == b"\x32\x09\x00\x03a/b\x00\x01hi", binascii.hexlify(s.out))


def test_qos1_publish_is_retransmitted_with_dup():
    c, s, logs = connected()
    s.ack_dup = True
    check(c.publish(b"a/b", b"hi", timeout_ms=1000), "acknowledged after a resend")
    check(
        s.out == b"\x32\x09\x00\x03a/b\x00\x01hi" + b"\x3a\x09\x00\x03a/b\x00\x01hi", binascii.hexlify(s.out)
    )


def test_publish_gives_up_within_its_timeout():
    c, s, logs = connected()
    t = time.ticks_ms()
    check(not c.publish(b"a/b", b"hi", timeout_ms=300), "not acknowledged")
    took = time.ticks_diff(time.ticks_ms(), t)
    check(took < 2000, "bounded: %d ms" % took)
    check(s.out.count(b"a/b") >= 3, "retransmitted")
    check(c.wrote, "the payload was written")


def test_publish_without_a_link_says_nothing_left():
    c, s, logs, net = client()
    net.fail = 111  # ECONNREFUSED at every connection attempt
    check(not c.publish(b"a/b", b"hi", timeout_ms=300), "not acknowledged")
    check(not c.wrote and s.out == b"", "no byte written: %s" % binascii.hexlify(s.out))


def test_incoming_qos1_message_is_acked_and_delivered():
    c, s, logs = connected()
    got = []
    c.on_message = lambda t, m: got.append((bytes(t), bytes(m)))
    s.inq.extend(b"\x32\x0c\x00\x03x/y\x12\x34frame")
    check(c.poll(0), "polled")
    check(got == [(b"x/y", b"frame")], "delivered: %s" % got)
    check(s.out == b"\x40\x02\x12\x34", "PUBACK with its id")


def test_oversized_message_is_acked_and_dropped():
    c, s, logs = connected(rx_size=16)
    got = []
    c.on_message = lambda t, m: got.append(m)
    s.inq.extend(b"\x32\x27\x00\x03x/y\x00\x07" + b"z" * 32 + b"\x30\x05\x00\x01qok")
    c.poll(0)
    c.poll(0)
    check(len(got) == 1 and bytes(got[0]) == b"ok", "the next message still arrives")
    check(s.out == b"\x40\x02\x00\x07", "acked")
    check("larger than the receive buffer" in logs[-1], logs[-1])


def test_keepalive_ping_and_dead_link():
    c, s, logs = connected()
    c._last_tx = time.ticks_add(time.ticks_ms(), -16000)
    c.poll(0)
    check(s.out == b"\xc0\x00", "PINGREQ")
    s.inq.extend(b"\xd0\x00")
    c.poll(0)
    check(c._ping_at is None, "PINGRESP clears it")
    c._last_tx = time.ticks_add(time.ticks_ms(), -16000)
    c.poll(0)
    time.sleep_ms(80)
    check(not c.poll(0) and c.sock is None, "no PINGRESP: the link is dropped")
    check("no PINGRESP" in logs[-1], logs[-1])


# Collector ---------------------------------------------------------------------------------

import collector  # noqa: E402


def test_put_num_formats_hundredths_and_integers():
    buf = bytearray(20)
    for v, point, s in (
        (0, 2, "0.00"),
        (5, 2, "0.05"),
        (-5, 2, "-0.05"),
        (2153, 2, "21.53"),
        (-2153, 2, "-21.53"),
        (100, 2, "1.00"),
        (123456789, 2, "1234567.89"),
        (0, 0, "0"),
        (1795000000, 0, "1795000000"),
        (-2147483648, 2, "-21474836.48"),
    ):
        n = collector.put_num(buf, 0, v, point)
        check(buf[:n] == s.encode(), "%d -> %s, not %s" % (v, s, buf[:n]))


class Board:
    def __init__(self):
        self.v = -300

    def read_sensor(self):
        self.v += 7
        return self.v

    def now(self):
        return 0  # no time server has set the clock


class Net:
    def subscribe(self, topic):
        self.topic = topic


def make_collector(batch_max=8, interval=0.5):
    cfg = {
        "device_id": "dev1",
        "service": "average",
        "bank": (b"k" * 8, (3, 65537)),
        "sensor": "t0",
        "unit": "C",
        "sample_interval": interval,
        "batch_seconds": 60,
        "batch_max": batch_max,
        "max_price": 1,
    }
    return collector.Collector(cfg, Board(), Net(), None)


class NoAckNet(Net):
    """Answers the QUERY LIVE at once; the OPERATION is never acknowledged, and `left`
    says whether its bytes were written (the broker unreachable all along, or not)."""

    connects = 0

    def __init__(self, left):
        self.left, self.wrote = left, False

    def ensure(self):
        return True

    def poll(self, timeout_ms):
        pass

    def publish(self, topic, frame, qos=1, timeout_ms=None):
        import wire

        kind, op_id = wire.frame_type(frame)
        if kind == wire.T_QUERY:
            # STATUS LIVE at 1 coin, by hand: the device's wire.py has no encoders
            self.on_message(topic, bytes([wire.VERSION, wire.T_STATUS]) + op_id + bytes([wire.S_LIVE, 1]))
            return True
        self.wrote = self.left
        return False


_KEY = []


def _unacknowledged_operation(left):
    if not _KEY:  # written by the host; fresh_store() clears the directory
        with open("key.json") as f:
            v = json.load(f)
        _KEY.append((binascii.unhexlify(v["kid"]), (int(v["n"], 16), 65537)))
    store = fresh_store()
    c = make_collector()
    c.cfg.update({"bank": _KEY[0], "query_timeout": 1, "op_timeout": 1})
    c.kid, c.pub = _KEY[0]
    c.net, c.store = NoAckNet(left), store
    c.net.on_message = c._on_message
    for _ in range(3):
        c._next = time.ticks_ms()
        c.idle()
    check(not c.operate(), "no result")
    return store


def test_an_operation_that_never_left_keeps_its_coin():
    store = _unacknowledged_operation(left=False)
    st = state()
    check(store.left() == 10 and st[2] == 0 and st[5] == 0, "the coin is unused again: %r" % (st[:6],))
    check(doubts() == [], "nothing in doubt")
    check(reopen().left() == 10, "and so after a restart")


def test_an_operation_written_but_not_acknowledged_is_in_doubt():
    _unacknowledged_operation(left=True)
    check(
        state()[2] == 1 and [d[2] for d in doubts()] == [coinstore.R_NOT_SENT], "in doubt: %r" % (doubts(),)
    )


def test_readings_json_is_valid_and_complete():
    c = make_collector()
    for _ in range(8):
        c._next = time.ticks_ms()
        c.idle()
    n, used = c.build()
    data = json.loads(bytes(c.json[:n]))
    check(used == 8 and c.n == 8, "all used")
    check(data["values"] == [(-300 + 7 * i) / 100 for i in range(1, 9)], str(data["values"]))
    check(data["sensor"] == "t0" and data["unit"] == "C" and data["interval"] == 0.5, str(data))
    check(c.net.topic == b"ecoin/dev/dev1/down", "subscribed to its down topic")


def test_full_buffer_triggers_the_batch_and_drops_newest():
    c = make_collector(batch_max=3)
    for _ in range(5):
        c._next = time.ticks_ms()
        c.idle()
    check(c.n == 3 and c.dropped == 2, "3 kept, 2 dropped")
    check(time.ticks_diff(time.ticks_ms(), c._batch_at) >= 0, "due now")


class FakeTopup:
    """Stands in for topup.py in sys.modules (step imports it there): records the call and,
    like the real one after an attempt, puts the next one topup_retry away."""

    def __init__(self, calls):
        self.calls = calls

    def run(self, dev):
        self.calls.append("topup")
        dev.topup_at = time.ticks_add(time.ticks_ms(), 60000)


def test_a_due_topup_runs_before_a_due_batch():
    c = make_collector()
    c.cfg.update({"low_coins": 100})
    c.store = fresh_store()  # 10 coins: below low_coins, so a top-up is due
    calls = []
    c.operate = lambda: calls.append("operate")
    c.net.poll = lambda timeout_ms: None
    for _ in range(3):
        c._next = time.ticks_ms()
        c.idle()
    c._batch_at = c.topup_at = time.ticks_ms()  # both due now
    sys.modules["topup"] = FakeTopup(calls)
    try:
        c.step()
        check(calls == ["topup"], "the top-up first, alone: %r" % (calls,))
        check("topup" not in sys.modules, "topup dropped after use")
        c.step()
        check(calls == ["topup", "operate"], "then the batch: %r" % (calls,))
    finally:
        sys.modules.pop("topup", None)


# Session round trip ------------------------------------------------------------------------


def test_session_round_trip_with_cpython(vectors):
    import session
    import ucrypto as cr

    with open(vectors) as f:
        v = json.load(f)
    h = binascii.unhexlify
    n = int(v["n"], 16)
    coin, op_id = h(v["coin"]), h(v["op_id"])
    readings = v["readings"].encode()
    _, k_enc, k_mac, frame = session.seal_operation(
        cr, (n, 65537), h(v["kid"]), coin, "average", readings, op_id=op_id
    )
    with open("operation.hex", "w") as f:
        f.write(binascii.hexlify(frame).decode())
    result = h(v["result"])
    check(session.open_result(cr, result, op_id, k_enc, k_mac) == v["plain"].encode(), "result opens")
    bad = bytearray(result)
    bad[-40] ^= 1
    check(raises(session.InvalidTag, session.open_result, cr, bad, op_id, k_enc, k_mac), "tampered")
    check(raises(session.InvalidTag, session.open_result, cr, result, b"x" * 16, k_enc, k_mac), "other op")
    # The collector seals in place, into its one buffer: the same bytes as seal_operation.
    c = make_collector(batch_max=40)
    c.kid, c.pub = h(v["kid"]), (n, 65537)
    c = collector.Collector(dict(c.cfg, bank=(c.kid, c.pub)), Board(), Net(), None)
    for _ in range(40):
        c._next = time.ticks_ms()
        c.idle()
    size = c.build()[0]
    plain = bytes(c.json[:size])
    iv, seed = bytes(range(16)), bytes(range(32))
    want = session.seal_operation(
        cr, (n, 65537), c.kid, coin, "average", plain, op_id=op_id, iv=iv, seed=seed
    )
    got = c.seal(coin, op_id, size, iv, seed)
    check(bytes(got[2]) == bytes(want[3]) and (got[0], got[1]) == want[1:3], "in-place seal = seal_operation")
    c.build()  # the JSON was encrypted where it lay: written again, sealed with fresh randomness
    with open("collector.hex", "w") as f:
        f.write(
            binascii.hexlify(c.seal(coin, op_id, size)[2]).decode() + " " + binascii.hexlify(plain).decode()
        )


GROUPS = {
    "coinstore": [
        test_take_records_the_coin_before_returning_it,
        test_peek_changes_nothing_until_take,
        test_doubt_appends_op_id_coin_and_reason,
        test_no_coins_left_raises,
        test_restart_with_a_pending_coin_puts_it_in_doubt_once,
        test_power_loss_between_record_and_state_adds_no_duplicate,
        test_torn_doubt_record_is_trimmed,
        test_an_operation_takes_its_price_in_coins_and_puts_them_all_in_doubt,
        test_an_operation_charged_less_keeps_only_the_coins_beyond_paid_in_doubt,
        test_restart_puts_every_coin_of_the_pending_operation_in_doubt_once,
        test_interrupted_rename_and_orphans_are_repaired,
        test_settled_records_leave_the_doubt_store,
        test_a_late_result_finds_its_coin_once_and_settles_it,
        test_corrupt_state_is_refused,
        test_topup_adds_coins_after_the_unused_ones,
    ],
    "serial": [
        test_crc32_matches_zlib,
        test_cobs_decodes_known_vectors,
        test_serial_frames_round_trip_in_any_chunking,
        test_serial_drops_bad_crc_and_overlong_frames,
        test_serial_writes_encoded_frames_to_file,
        test_serial_reads_gateway_frames,
    ],
    "mqtt": [
        test_put_length,
        test_connect_packet_and_resubscribe,
        test_connect_refused_is_reported_and_backed_off,
        test_backoff_grows_with_jitter_and_is_capped,
        test_qos1_publish_bytes_and_puback,
        test_qos1_publish_is_retransmitted_with_dup,
        test_publish_gives_up_within_its_timeout,
        test_publish_without_a_link_says_nothing_left,
        test_incoming_qos1_message_is_acked_and_delivered,
        test_oversized_message_is_acked_and_dropped,
        test_keepalive_ping_and_dead_link,
    ],
    "collector": [
        test_put_num_formats_hundredths_and_integers,
        test_readings_json_is_valid_and_complete,
        test_full_buffer_triggers_the_batch_and_drops_newest,
        test_an_operation_that_never_left_keeps_its_coin,
        test_an_operation_written_but_not_acknowledged_is_in_doubt,
        test_a_due_topup_runs_before_a_due_batch,
    ],
}


def main():
    group, workdir = sys.argv[1], sys.argv[2]
    os.chdir(workdir)
    if group == "session":
        vectors = sys.argv[3]

        def test_session_round_trip_with_cpython_():
            test_session_round_trip_with_cpython(vectors)

        run(test_session_round_trip_with_cpython_)
    else:
        for fn in GROUPS[group]:
            run(fn)
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))


main()

# The collector's operation cycle: sample, ask, pay, send, wait, verify, decrypt, hand over.
#
# Readings are small integers (hundredths of the unit) kept in a preallocated array and
# written as JSON into a preallocated buffer, so sampling allocates nothing. Every batch:
# QUERY the service; if LIVE at a price (in coins) no higher than max_price, take that many
# coins (recorded durably first, coinstore.py), seal them into the OPERATION's header,
# publish it, and wait for RESULT or ERROR with the same op_id. A RESULT is verified before
# it is decrypted, then handed to on_result; one that does not verify is ignored (the
# genuine one may still come) until op_timeout. Any ERROR (whatever its code), a timeout, or
# only bad answers put the coins in doubt; they are never reused. A RESULT that comes after
# its operation ended settles that doubt if it verifies (late.py). Below low_coins the device
# tops up (topup.py).
import array
import gc
import json
import struct
import sys
import time
from binascii import hexlify

import coinstore
import cryptolib
import session
import ucrypto as cr
import wire

_PER_VALUE = 8  # room per value in the JSON buffer: "-123.45," (values that do not fit wait)
_LONGEST = 13  # the longest value, with its comma: "-21474836.48,"
ROOM = 3072  # the contiguous room sealing needs: pow's integers (2 KiB were too few)


def layout(cfg):
    """(offset of the ciphertext, room for the readings' JSON, length) of the one OPERATION
    buffer: prefix | kid | service | header | ciphertext length | ciphertext | tag
    (PROTOCOL.md 4.1, wire.encode_operation). The JSON is written where its ciphertext goes
    and encrypted in place, so sealing copies nothing."""
    at = wire.PREFIX_LEN + wire.KID_LEN + 1 + len(cfg["service"]) + 2 + cr.modulus_len(cfg["bank"][1][0]) + 2
    room = min(wire.PAYLOAD_MAX, cfg["json_size"])
    return at, room, at + (room // 16 + 1) * 16 + wire.TAG_LEN


def put_num(buf, p, v, point=2):
    """Writes v as a JSON number at buf[p] with `point` decimals (2: v / 100, "-12.05";
    0: an integer); returns the end position. No allocation."""
    if v < 0:
        buf[p] = 45
        p += 1
        v = -v
    q, n = p, 0
    while True:  # right to left, then reversed
        if n == point and n:
            buf[q] = 46
            q += 1
        buf[q] = 48 + v % 10
        v //= 10
        q += 1
        n += 1
        if n > point and not v:
            break
    i, j = p, q - 1
    while i < j:
        buf[i], buf[j] = buf[j], buf[i]
        i += 1
        j -= 1
    return q


class Collector:
    def __init__(self, cfg, board, net, store, on_result=None, log=print, feed=None):
        self.cfg, self.board, self.net, self.store = cfg, board, net, store
        self.on_result, self.log, self.feed = on_result, log, feed
        self.service = wire.service_name(cfg["service"])
        self.up = ("ecoin/dev/%s/up" % cfg["device_id"]).encode()
        self.kid, self.pub = cfg["bank"]  # checked at boot (start.py)
        self.interval_ms = int(cfg["sample_interval"] * 1000)
        self.batch_ms = int(cfg["batch_seconds"] * 1000)
        nmax = cfg["batch_max"]
        # Buffers allocated by app.py early, before the heap fragments (or here).
        self.values = cfg.pop("values", None) or array.array("i", bytes(4 * nmax))
        self.n = 0
        self._head = ('{"sensor":"%s","unit":"%s","start":' % (cfg["sensor"], cfg["unit"])).encode()
        self._mid = (',"interval":%s,"values":[' % cfg["sample_interval"]).encode()
        if "json_size" not in cfg:
            cfg["json_size"] = len(self._head) + 10 + len(self._mid) + _PER_VALUE * nmax + _LONGEST
        self._at, room, size = layout(cfg)
        frame = self.frame = cfg.pop("frame", None) or bytearray(size)
        frame[0], frame[1] = wire.VERSION, wire.T_OPERATION  # the fixed fields, written once
        frame[18:26] = self.kid
        frame[26] = len(self.service)
        frame[27 : 27 + len(self.service)] = self.service
        struct.pack_into(">H", frame, 27 + len(self.service), self._at - 31 - len(self.service))
        self.json = memoryview(frame)[self._at : self._at + room]
        # Sealing needs some contiguous room (the RSA integers). A heap this small fragments,
        # so that room is held, here and as ucrypto.room: oaep_encrypt lets it go just before
        # its RSA step, once the header's other temporaries are placed.
        self._room = ROOM
        self._reserve = cr.room = cfg.pop("room", None)  # launch.py's, from before boot
        self._start = 0
        self._next = self._batch_at = self.topup_at = time.ticks_ms()
        self._want = 0  # the frame type awaited, for op_id _op, opened with the keys _k
        self._op = self._k = self._done = self._led_off = None
        self.ops = self.results = self.doubts = self.dropped = 0
        net.on_message = self._on_message
        net.idle = self.idle
        net.subscribe(("ecoin/dev/%s/down" % cfg["device_id"]).encode())
        if self._reserve is None:
            self._keep_room()  # last: the attributes above are set before the room is taken

    # Sampling.

    def idle(self):
        """Called from every wait: takes a reading if one is due, feeds the watchdog."""
        if self.feed:
            self.feed()
        now = time.ticks_ms()
        if self._led_off is not None and time.ticks_diff(now, self._led_off) >= 0:
            self.board.led(False)
            self._led_off = None
        if time.ticks_diff(now, self._next) < 0:
            return
        self._next = time.ticks_add(self._next, self.interval_ms)
        if time.ticks_diff(now, self._next) > 0:  # far behind: no burst to catch up
            self._next = time.ticks_add(now, self.interval_ms)
        if self.n >= len(self.values):
            self.dropped += 1  # full and not yet sent: the newest reading is dropped
            return
        try:
            v = self.board.read_sensor()
        except OSError:  # a routine sensor timeout (DHT22): this reading is skipped
            return
        if self.n == 0:
            self._start = self.board.now()  # 0: no time server has set the clock
            self._batch_at = time.ticks_add(now, self.batch_ms)
        self.values[self.n] = v
        self.n += 1
        if self.n == len(self.values):
            self._batch_at = now  # full: send now rather than at the end of the period

    def build(self):
        """Writes the buffered readings as JSON into self.json; returns (length, values used)."""
        buf = self.json
        p = len(self._head)
        buf[:p] = self._head
        p = put_num(buf, p, self._start, 0)
        buf[p : p + len(self._mid)] = self._mid
        p += len(self._mid)
        used = 0
        limit = len(buf) - _LONGEST - 2
        while used < self.n and p < limit:
            if used:
                buf[p] = 44
                p += 1
            p = put_num(buf, p, self.values[used])
            used += 1
        buf[p] = 93
        buf[p + 1] = 125
        return p + 2, used

    # Exchanges.

    def _on_message(self, topic, msg):
        try:
            kind, op_id = wire.frame_type(msg)
        except wire.InvalidFrame:
            self.log("collector: ignored a malformed frame")
            return
        if op_id != self._op and kind == wire.T_RESULT:
            if self.store.doubt_count():  # an operation already over, perhaps ours in doubt
                self._late(msg, op_id)
            return
        if self._op is None or op_id != self._op or self._done and self._done[0] != "bad":
            return  # stale, not ours (a replay), or after the answer
        if kind == wire.T_ERROR:  # unauthenticated: whatever its code, over and in doubt
            self._done = ("error", msg[18] if len(msg) == 19 and msg[18] in wire.ERROR_CODES else 1)
            return
        try:
            if kind != self._want:
                return
            if kind == wire.T_STATUS:
                self._done = ("status", wire.decode_status(msg))  # (op_id, code, price)
            elif kind == wire.T_RESULT:
                self._done = ("ok", session.open_result(cr, msg, self._op, self._k[0], self._k[1]))
            else:  # T_TOPUP_RESPONSE, awaited by topup.py with _k = (device key, counter)
                self._done = ("ok", session.open_topup_response(cr, self._k[0], msg, self._op, self._k[1]))
        except (session.InvalidTag, wire.InvalidFrame):
            # Anyone can send a bad answer first: keep waiting for the genuine one until the
            # timeout, and if none comes say that a bad one did (reason 11).
            self._done = ("bad", None)  # the wait goes on (exchange)
            self.log("collector: bad answer ignored")

    def _late(self, msg, op_id):
        held = self._reserve is not None
        self._reserve = cr.room = None  # the room kept for sealing: loading and decrypting need some
        gc.collect()
        try:
            import late  # rare: loaded for the occasion, then dropped

            late.result(self, msg, op_id)
        except MemoryError:
            self.log("collector: late answer ignored (out of memory)")
        finally:
            sys.modules.pop("late", None)
            if held:
                self._keep_room()

    def exchange(self, frame, want, op_id, timeout_s, keys=None):
        """Publishes frame and waits for the answer to op_id: ("ok"|"status"|"error", value),
        ("unsent", None) if no byte of it ever left, ("unacked", None) if the broker never
        acknowledged it (it may have left), or at the timeout ("bad", None) if only
        answers that do not verify came, ("timeout", None) if none did."""
        self._want, self._op, self._k, self._done = want, op_id, keys, None
        timeout = int(timeout_s * 1000)
        try:
            if not self.net.publish(self.up, frame, timeout_ms=timeout):
                return ("unacked" if self.net.wrote else "unsent"), None
            # A QUERY costs nothing and can be lost unseen (a broker restarted, a gateway not
            # yet subscribed again): it is asked again 1, 2, 4 ... s on, and at once on a new
            # connection, rather than waiting out the whole timeout. Anything else: never.
            again = frame if want == wire.T_STATUS else None
            frame = None  # let the frame go while we wait
            end = time.ticks_add(time.ticks_ms(), timeout)
            at, gap, link = time.ticks_add(time.ticks_ms(), 1000), 1000, self.net.connects
            while (self._done is None or self._done[0] == "bad") and time.ticks_diff(end, time.ticks_ms()) > 0:
                self.net.poll(min(100, time.ticks_diff(end, time.ticks_ms())))
                self.idle()
                new = link != self.net.connects
                if again and self._done is None and (new or time.ticks_diff(time.ticks_ms(), at) >= 0):
                    gap = 1000 if new else gap * 2
                    self.net.publish(self.up, again, timeout_ms=max(1, time.ticks_diff(end, time.ticks_ms())))
                    at, link = time.ticks_add(time.ticks_ms(), gap), self.net.connects
            return self._done or ("timeout", None)
        finally:
            self._op = self._k = self._done = None

    def seal(self, coins, op_id, n, iv=None, seed=None):
        """Seals the n bytes of JSON in self.json into the OPERATION buffer, in place: what
        session.seal_operation builds, byte for byte (tests/firmware). Returns (k_enc, k_mac,
        the frame as a memoryview)."""
        frame, at = self.frame, self._at
        iv = iv or cr.random(wire.IV_LEN)
        frame[2:18] = op_id
        header = session.seal_header(cr, self.pub, coins, iv, op_id, self.service, seed)
        frame[at - 2 - len(header) : at - 2] = header
        header = None
        k_enc, k_mac = session.session_keys(cr, coins, op_id)
        pad = 16 - n % 16  # PKCS#7, as ucrypto.aes_cbc_encrypt
        end = at + n + pad
        for i in range(at + n, end):
            frame[i] = pad
        struct.pack_into(">H", frame, at - 2, n + pad)
        ct = memoryview(frame)[at:end]
        cryptolib.aes(k_enc, 2, iv).encrypt(ct, ct)  # 2: CBC
        frame[end : end + wire.TAG_LEN] = cr.hmac_sha256(k_mac, session.OPERATION_LABEL, cr.sha256(memoryview(frame)[:end]))
        return k_enc, k_mac, memoryview(frame)[: end + wire.TAG_LEN]

    def _keep_room(self):
        self._reserve = cr.room = None
        gc.collect()
        try:
            self._reserve = cr.room = bytearray(self._room)
        except MemoryError:
            pass  # fragmented for now: try again after the next operation

    def operate(self):
        """One paid operation with the buffered readings. True on a verified result."""
        store = self.store
        if not store.left():
            self.log("collector: no coins left; %d readings dropped" % self.n)
            self.dropped += self.n
            self.n = 0
            return False
        self._batch_at = time.ticks_add(time.ticks_ms(), self.batch_ms)  # the next try, if this fails
        if not self.net.ensure():
            self.log("collector: broker unreachable; %d readings kept" % self.n)
            return False
        op_id = cr.random(16)
        what, st = self.exchange(wire.encode_query(op_id, self.service), wire.T_STATUS, op_id,
                                 self.cfg["query_timeout"])
        if what != "status" or st[1] != wire.S_LIVE:
            self.log("collector: service not live (%s %s); %d readings kept"
                     % (what, st[1] if what == "status" else st, self.n))
            return False
        price = st[2]  # unauthenticated: never more than max_price, and the header holds no more
        if price > self.cfg["max_price"] or price > store.left():
            self.log("collector: price %d coins is above max_price %d or the %d left: refused, "
                     "nothing spent; %d readings kept" % (price, self.cfg["max_price"], store.left(), self.n))
            return False
        if self._reserve is None:
            self._keep_room()  # an earlier failure may have left none
        n, used = self.build()
        op_id = cr.random(16)
        began = time.ticks_ms()  # the latency the owner sees: seal to verified result
        self._reserve = None  # the room kept for this moment: ucrypto.room lets it go inside
        gc.collect()
        try:
            k_enc, k_mac, frame = self.seal(store.peek(price), op_id, n)
            store.take(op_id, price)  # durable before the coins leave; until here they stayed unused
            self.ops += 1
            for i in range(used, self.n):  # readings that did not fit stay for the next batch
                self.values[i - used] = self.values[i]
            self.n -= used
            if self.n and self._start:
                self._start += int(used * self.cfg["sample_interval"])
            what, value = self.exchange(frame, wire.T_RESULT, op_id, self.cfg["op_timeout"], (k_enc, k_mac))
            frame = None
            self._keep_room()
            if what == "ok":
                try:
                    result = json.loads(value)
                except ValueError:
                    result = None
                if not isinstance(result, dict) or result.get("service") != self.cfg["service"]:
                    what = "bad result"  # PROTOCOL.md 5: the result of the service asked for
        except BaseException:  # cut short (Ctrl-C, out of memory)
            if store.op_id is not None:  # the coin was taken: its fate is unknown
                store.doubt(coinstore.R_RESTART)
                self.doubts += 1
            frame = None
            self._keep_room()
            raise
        short = hexlify(op_id[:4]).decode()
        if what == "unsent":  # a local fault before the coin left: it is still unused
            store.untake()
            self.log("collector: op %s not sent (broker unreachable); coin kept; %d left" % (short, store.left()))
            return False
        if what != "ok":
            store.doubt(value if what == "error" else coinstore.R_TIMEOUT if what == "timeout"
                        else coinstore.R_BAD_TAG if what == "bad" else coinstore.R_NOT_SENT
                        if what == "unacked" else coinstore.R_BAD_RESULT)
            self.doubts += 1
            self.log("collector: op %s failed (%s); coin in doubt; %d left"
                     % (short, "error %d" % value if what == "error" else what, store.left()))
            return False
        paid = result.get("paid", price)  # absent: an analyst before it, charged them all
        if isinstance(paid, int) and 0 < paid < price:  # told more than the analyst's price
            store.doubt(coinstore.R_OVERPAID, paid)  # the rest is refundable by the claim
            self.log("collector: op %s charged %d of %d coins; %d kept for refund"
                     % (short, paid, price, price - paid))
        else:
            store.spent()
        self.results += 1
        self.log("collector: op %s result %s; %d left; in %d ms"
                 % (short, value.decode(), store.left(), time.ticks_diff(time.ticks_ms(), began)))
        if self.on_result:
            self.on_result(op_id, result)
        self.board.led(True)  # a short blink for every result (off again in idle)
        self._led_off = time.ticks_add(time.ticks_ms(), 50)
        return True

    def step(self):
        self.idle()
        # A due top-up goes first: with batches always due (operations slower than
        # batch_seconds) it would otherwise never run, and the coins would run out.
        # A failed one waits topup_retry, so operations go on meanwhile.
        if self.store.left() < self.cfg["low_coins"] and time.ticks_diff(time.ticks_ms(), self.topup_at) >= 0:
            import topup  # rarely needed: loaded for the occasion, then dropped

            try:
                topup.run(self)
            finally:
                del sys.modules["topup"]
        elif self.n and time.ticks_diff(time.ticks_ms(), self._batch_at) >= 0:
            self.operate()
        self.net.poll(max(0, min(100, time.ticks_diff(self._next, time.ticks_ms()))))

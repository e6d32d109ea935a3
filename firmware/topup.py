# Top-up: asks the bank, through the gateway, for coins when few are left (PROTOCOL.md 4.5,
# 4.6). Loaded by the collector only when needed, and dropped afterwards.
import gc
import time

import session
import ucrypto as cr
import wire

# The op_id of a top-up request is derived from its counter (PROTOCOL.md 4.5), here rather
# than in session.py: only the device needs it, and this module is loaded only to top up.
_OP_LABEL = b"ecoin/v1 topup op_id\x00"


def add(store, coins):
    """Adds coins (a multiple of 32 bytes): writes a new coin file holding the unused coins
    and the new ones, then switches state.bin to it in one rename. A power loss before the
    rename leaves the old store intact (start.py removes the orphan file)."""
    if not coins or len(coins) % 32:
        raise ValueError("coins must be a non-empty multiple of 32 bytes")
    old, new = "coins.%d.bin" % store.gen, "coins.%d.bin" % (store.gen + 1)
    chunk = bytearray(256)
    with open(new, "wb") as out:
        with open(old, "rb") as src:
            src.seek(store.next * 32)
            todo = store.left() * 32
            while todo > 0:
                n = src.readinto(chunk)
                if not n:
                    raise OSError("coin file shorter than state.bin says")
                out.write(memoryview(chunk)[: min(n, todo)])
                todo -= n
        out.write(coins)
    store.count = store.left() + len(coins) // 32
    store.gen += 1
    store.next = 0
    store._peeked = -1  # the coin file changed under any peek
    store.save()
    import os

    os.remove(old)


def run(dev):
    """One top-up attempt; the next one is topup_retry seconds away whatever happens."""
    cfg, store = dev.cfg, dev.store
    dev.topup_at = time.ticks_add(time.ticks_ms(), int(cfg["topup_retry"] * 1000))
    if not dev.net.ensure():
        return False
    dev.log("topup: %d coins left; asking the bank for %d" % (store.left(), cfg["topup_count"]))
    # The counter is committed together with the coins it brought (add() saves both in one
    # rename). Until then every attempt repeats the identical request (its op_id is derived
    # from the counter), which the bank answers with the same coins: an answer lost on the
    # way never costs the owner a second batch, and no batch is ever added twice.
    counter = store.counter + 1
    key = cfg["device_key"]
    op_id = cr.hmac_sha256(session.topup_auth_key(cr, key), _OP_LABEL, counter.to_bytes(4, "big"))[:16]
    op_id, frame = session.seal_topup_request(cr, key, cfg["device_id"], counter, cfg["topup_count"], op_id)
    dev._reserve = cr.room = None  # the answer (up to 3.3 KB) is opened in the room kept for sealing
    gc.collect()
    try:
        what, value = dev.exchange(frame, wire.T_TOPUP_RESPONSE, op_id, cfg["op_timeout"], (key, counter))
    finally:
        frame = None
        dev._keep_room()
    if what != "ok":
        dev.log("topup: failed (%s %s)" % (what, value))
        return False
    expires, coins = value
    store.counter = counter
    add(store, coins)
    dev.log("topup: %d coins added (valid until %d); %d left" % (len(coins) // 32, expires, store.left()))
    return True

# A RESULT that comes after its operation ended (PROTOCOL.md 9): if its coins are in doubt
# here and its tag verifies under the keys of those coins and its op_id, the device has its
# result after all and the doubt is settled. Rare, so loaded by the collector only when such
# a RESULT comes (and something is in doubt), then dropped: none of this stays in the heap.
import json
from binascii import hexlify

import coinstore
import session
import ucrypto as cr
import wire

_LATE = 16  # a late RESULT is matched against the newest in-doubt records only


def doubted(store, op_id):
    """The coins of op_id's in-doubt records (one per coin of its header, in order) if they
    are among the newest _LATE and not settled, else None."""
    n = store.doubt_count()
    k, r, coins = min(n, _LATE), store._rec, b""
    if k:
        with open(coinstore.DOUBT, "rb") as f:
            f.seek((n - k) * coinstore.RECORD)
            for _ in range(k):
                if f.readinto(r) == coinstore.RECORD and r[:16] == op_id:
                    coins += r[16:48]
    if not coins or _settled(op_id):
        return None
    return coins


def settle(op_id):
    """op_id's doubt is over: the owner's claim skips it and the next boot drops it. A torn
    earlier append is padded over, so entries stay 16-byte aligned."""
    pad = coinstore.size(coinstore.SETTLED) % 16
    with open(coinstore.SETTLED, "ab") as f:
        if pad:
            f.write(bytes(16 - pad))
        f.write(op_id)


def _settled(op_id):
    if not coinstore.size(coinstore.SETTLED):
        return False
    with open(coinstore.SETTLED, "rb") as f:
        while True:
            ids = f.read(512)
            if not ids:
                return False
            if coinstore.listed(op_id, ids):
                return True


def result(dev, msg, op_id):
    """Handles a RESULT for op_id, no longer awaited by dev (a Collector). Anything but the
    genuine answer to an operation in doubt here (a replay of a settled one, a forgery, an
    unknown op_id) is ignored like any stray answer."""
    coins = doubted(dev.store, op_id)
    if coins is None:
        return
    try:
        value = session.open_result(cr, msg, op_id, *session.session_keys(cr, coins, op_id))
        res = json.loads(value)
        if not isinstance(res, dict) or res.get("service") != dev.cfg["service"]:
            raise ValueError()
        paid = res.get("paid")
        paid = paid if isinstance(paid, int) and 0 < paid < len(coins) // 32 else 0
        if not paid:  # charged less: the doubt stays, the claim refunds the coins not spent
            settle(op_id)
    except (session.InvalidTag, wire.InvalidFrame, ValueError, OSError):
        dev.log("collector: late answer ignored")  # the current operation goes on
        return
    dev.log("collector: op %s late result %s; %s"
            % (hexlify(op_id[:4]).decode(), value.decode(),
               "charged %d: kept for refund" % paid if paid else "coin settled"))
    if dev.on_result:
        dev.on_result(op_id, res)

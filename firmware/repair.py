# Boot, second half (start.py is the first): open the coin store, finishing what a power
# loss interrupted, start the watchdog, join the network and set the clock. Loaded by app.py
# once start.py is dropped, used once, then dropped in turn.
import os
import struct
import sys

import coinstore


class ConfigError(Exception):  # the same name as start.py's: cannot_start tells it by name
    pass


def _exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def open_store():
    """Opens the coin store, finishing what a power loss interrupted: a rename on FAT, a torn
    in-doubt record, an operation in flight (its coin goes in doubt), a half-done top-up."""
    if not _exists("state.bin") and _exists("state.tmp"):
        os.rename("state.tmp", "state.bin")
    try:
        with open("state.bin", "rb") as f:
            raw = f.read()
    except OSError:
        raise ConfigError("no coin store (state.bin): provision the device first")
    if len(raw) != coinstore.STATE_LEN or raw[:4] != coinstore.MAGIC:
        raise ConfigError("state.bin is corrupt")
    store = coinstore.CoinStore(struct.unpack(coinstore.FMT, raw))
    size = store.doubt_count() * coinstore.RECORD
    if _exists(coinstore.DOUBT) and os.stat(coinstore.DOUBT)[6] != size:
        buf = bytearray(coinstore.RECORD)
        with open(coinstore.DOUBT, "rb") as src, open("doubt.tmp", "wb") as dst:
            for _ in range(size // coinstore.RECORD):  # whole records only
                src.readinto(buf)
                dst.write(buf)
        coinstore.replace("doubt.tmp", coinstore.DOUBT)
    if _exists(coinstore.SETTLED):
        _settle(size)
        size = store.doubt_count() * coinstore.RECORD
    if store.op_id is not None:
        done = _doubts(store.op_id, size)  # records a power loss inside doubt() left
        if done >= store.pending:
            store.op_id = None
            store.save()
        else:
            store.doubt(coinstore.R_RESTART, done)
        print("store: the operation cut by a restart is in doubt")
    keep = "coins.%d.bin" % store.gen
    for name in os.listdir():
        if (name.startswith("coins.") and name != keep) or name.endswith(".tmp"):
            os.remove(name)
    return store


def _settle(size):
    """Drops the in-doubt records listed in settled.bin, 64 op_ids at a time (a small heap),
    then removes the list. Cut anywhere, it is simply done again at the next boot."""
    rec = bytearray(coinstore.RECORD)
    with open(coinstore.SETTLED, "rb") as f:
        while True:
            ids = f.read(1024)
            if not ids:
                break
            with open(coinstore.DOUBT, "rb") as src, open("doubt.tmp", "wb") as dst:
                for _ in range(size // coinstore.RECORD):
                    src.readinto(rec)
                    if not coinstore.listed(bytes(rec[:16]), ids):
                        dst.write(rec)
            coinstore.replace("doubt.tmp", coinstore.DOUBT)
            size = os.stat(coinstore.DOUBT)[6]
    os.remove(coinstore.SETTLED)
    print("store: settled in-doubt records removed")


def _doubts(op_id, size):
    """How many in-doubt records op_id has (one per coin it paid)."""
    n = 0
    if size:
        with open(coinstore.DOUBT, "rb") as f:
            for _ in range(size // coinstore.RECORD):
                n += f.read(coinstore.RECORD)[:16] == op_id
    return n


def _network(board, cfg, feed):
    """Waits for WiFi as long as it takes (routers boot slower than boards), feeding the
    watchdog; then sets the clock (TLS needs it)."""
    import time

    began = time.ticks_ms()
    while not board.connect_network(cfg, feed, 15000):
        print("network: waiting for %s (%d s)" % (cfg["wifi_ssid"], time.ticks_diff(time.ticks_ms(), began) // 1000))
    if board.now():
        return  # a clock already set (the kind sim board has the host's)
    import timesync

    try:
        if not timesync.sync(board, cfg, feed) and cfg["tls"]:
            timesync.floor(board, cfg)
    finally:
        del sys.modules["timesync"]


def ready(board, cfg):
    """Returns the coin store, checked and repaired; the watchdog is running (cfg["wdt"]) and,
    for MQTT, the board is on the network with its clock set if it can be."""
    store = open_store()
    wdt = cfg["wdt"] = board.watchdog(cfg["watchdog_ms"])
    if hasattr(board, "running"):
        board.running()  # the firmware feeds the watchdog from here on (not boot.py's timer)
    if cfg["transport"] == "mqtt" and hasattr(board, "wifi_board"):  # the kind sim board is always on the network
        _network(board, cfg, wdt.feed if wdt else None)
    return store

# The collector application, run by main.py at boot. It boots in two phases so that the heap
# is not fragmented: start.py (configuration, coin store repair, network, clock) is loaded,
# used and dropped before the modules that stay are loaded into the room it leaves. Then it
# steps the collector forever (or for max_ops operations): out-of-memory and I/O errors are
# reported on the console and survived; the watchdog is fed from every wait.
#
# Boot never ends in the REPL unattended: a configuration error is printed and waits for
# maintenance (again every minute, the watchdog kept fed); any other failure is printed, and
# the board backs off BACKOFF_S and resets. Only Ctrl-C (an owner, mpremote) reaches the
# REPL, with the watchdog fed in the background so that maintenance is not cut off.
import array
import gc
import sys
import time

import board
import collector  # the modules that stay load first, at the bottom of the heap

BACKOFF_S = 15  # after a failed boot, before the reset that tries again
DAY_MS = 86400000


def _device():
    try:
        import start

        cfg, store = start.boot(board)
    finally:
        sys.modules.pop("start", None)  # boot code: give its memory back
    gc.collect()
    # The collector's two big buffers, while the room start.py left is still in one piece.
    cfg["json_buf"] = bytearray(cfg["json_size"])
    cfg["values"] = array.array("i", bytes(4 * cfg["batch_max"]))
    wdt = cfg["wdt"]
    if cfg["transport"] == "serial":
        import serial_link

        net = serial_link.SerialLink(board.uart(cfg), cfg["rx_size"])
        where = "serial " + str(cfg["serial_port"])
    else:
        import mqtt

        net = mqtt.Client(cfg["device_id"], cfg["broker_host"], cfg["broker_port"], cfg["username"],
                          cfg["password"], cfg["keepalive"], cfg["ssl"], cfg["io_timeout"], cfg["rx_size"],
                          nodelay=board.NODELAY)
        net.link = lambda: board.connect_network(cfg, None, 0)  # rejoins WiFi after an outage
        where = "mqtt %s:%d%s" % (cfg["broker_host"], cfg["broker_port"], " (tls)" if cfg["tls"] else "")
    dev = collector.Collector(cfg, board, net, store, None, feed=wdt.feed if wdt else None)
    print("collector %s: service %s via %s; %d coins left, %d in doubt"
          % (cfg["device_id"], cfg["service"], where, store.left(), store.doubt_count()))
    return dev


def _sleep(seconds, wdt):
    end = time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        if wdt:
            wdt.feed()
        time.sleep_ms(200)


def _cannot_start(exc):
    """Says why; a configuration error waits for maintenance, anything else resets."""
    if hasattr(sys, "print_exception") and not type(exc).__name__ == "ConfigError":
        sys.print_exception(exc)
    if type(exc).__name__ == "ConfigError":
        while True:  # until an owner fixes it (Ctrl-C, mpremote); boot.py's timer feeds the watchdog
            print("collector cannot start: %s; waiting for maintenance" % (exc,))
            _sleep(60, None)
    print("collector cannot start: %r; resetting in %d s" % (exc, BACKOFF_S))
    _sleep(BACKOFF_S, None)  # unfed: a short watchdog resets sooner, which is as good
    board.reset()


def _resync(dev):
    """Sets the clock again (daily; every ntp_retry seconds while no time server answered)."""
    import timesync

    try:
        timesync.sync(board, dev.cfg, dev.feed, 1)
    finally:
        del sys.modules["timesync"]


def run():
    print("ecoin collector starting")
    try:
        dev = _device()
    except KeyboardInterrupt:
        return
    except Exception as exc:  # noqa: BLE001 - a board that cannot start says why
        _cannot_start(exc)
        return
    gc.collect()
    limit = dev.cfg["max_ops"]
    retry_ms = int(dev.cfg["ntp_retry"] * 1000)
    clock_at = time.ticks_add(time.ticks_ms(), DAY_MS if board.now() else retry_ms)
    while not limit or dev.ops < limit:
        try:
            dev.step()
            if dev.cfg["transport"] == "mqtt" and time.ticks_diff(time.ticks_ms(), clock_at) >= 0:
                _resync(dev)
                clock_at = time.ticks_add(time.ticks_ms(), DAY_MS if board.now() else retry_ms)
        except MemoryError as exc:
            gc.collect()
            print("main: out of memory; continuing with %d bytes free" % gc.mem_free())
            if hasattr(sys, "print_exception"):
                sys.print_exception(exc)
        except OSError as exc:
            print("main: I/O error (%s); continuing" % (exc,))
            time.sleep_ms(100)
        except KeyboardInterrupt:
            board.maintenance(dev.cfg["wdt"])  # mpremote or an owner: keep the watchdog fed
            break
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the device: report, pause, go on
            print("main: error %r; continuing" % (exc,))
            time.sleep(1)
    dev.net.disconnect()
    print("collector done: ops=%d results=%d doubts=%d left=%d in_doubt=%d"
          % (dev.ops, dev.results, dev.doubts, dev.store.left(), dev.store.doubt_count()))

# The collector application, run by main.py at boot. It boots in phases so that the heap is
# not fragmented: the collector's code first, at the bottom; the TLS context (if config.json
# asks for TLS); then start.py (configuration) and repair.py (coin store repair, watchdog,
# network, clock), each loaded, used and dropped in turn; then the transport's code and the
# buffers. Then it
# steps the collector forever (or for max_ops operations): out-of-memory and I/O errors are
# reported on the console and survived; the watchdog is fed from every wait.
#
# Boot never ends in the REPL unattended (start.cannot_start): a configuration error waits
# for maintenance, any other failure backs off and resets. Only Ctrl-C (an owner, mpremote)
# reaches the REPL, with the watchdog fed in the background so that maintenance is not cut off.
import array
import gc
import json
import sys
import time

import board
import collector

DAY_MS = 86400000


def _before_boot():
    """The TLS context if config.json asks for TLS (start.py checks the file), made before
    boot code fragments the heap: the SSL context object wants about 3 KB in one piece."""
    try:
        with open("config.json") as f:
            tls = json.load(f).get("tls") is True
    except (OSError, ValueError, AttributeError):
        return None
    gc.collect()
    return _tls() if tls else None


def _tls():
    import tlsctx

    try:
        return tlsctx.context(board)
    finally:
        del sys.modules["tlsctx"]


def _device():
    ssl = _before_boot()
    # Boot code, one half at a time, each given back before the next (the local name too:
    # it would keep the module's code alive).
    try:
        import start

        cfg = start.configure(board)
        start = None
    finally:
        sys.modules.pop("start", None)
    gc.collect()
    try:
        import repair

        store = repair.ready(board, cfg)
        repair = None
    finally:
        sys.modules.pop("repair", None)
    gc.collect()
    cfg["ssl"] = (ssl or _tls()) if cfg["tls"] else None  # never plain MQTT when TLS is asked
    # The collector's two big buffers, while the room boot code left is in its largest pieces.
    cfg["frame"] = bytearray(collector.layout(cfg)[2])
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
        where = "mqtt %s:%d%s" % (cfg["broker_host"], cfg["broker_port"], " (tls)" if cfg["tls"] else "")
        if hasattr(board, "wifi_board"):
            net.link = lambda: board.connect_network(cfg, None, 0)  # rejoins WiFi after an outage
    dev = collector.Collector(cfg, board, net, store, None, feed=wdt.feed if wdt else None)
    print("collector %s: service %s via %s; %d coins left, %d in doubt"
          % (cfg["device_id"], cfg["service"], where, store.left(), store.doubt_count()))
    return dev


def run():
    try:
        dev = _device()
    except KeyboardInterrupt:
        return
    except Exception as exc:  # noqa: BLE001 - a board that cannot start says why
        import start

        start.cannot_start(board, exc)
        return
    gc.collect()
    limit = dev.cfg["max_ops"]
    retry_ms = int(dev.cfg["ntp_retry"] * 1000)
    clock_at = time.ticks_add(time.ticks_ms(), DAY_MS if board.now() else retry_ms)
    resync = dev.cfg["transport"] == "mqtt" and hasattr(board, "set_time")  # a board with a time server
    while not limit or dev.ops < limit:
        try:
            dev.step()
            if resync and time.ticks_diff(time.ticks_ms(), clock_at) >= 0:
                import timesync

                timesync.sync(board, dev.cfg, dev.feed, 1)
                del sys.modules["timesync"]
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
            if hasattr(board, "maintenance"):
                board.maintenance(dev.cfg["wdt"])  # mpremote or an owner: keep the watchdog fed
            break
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the device: report, pause, go on
            print("main: error %r; continuing" % (exc,))
            time.sleep(1)
    dev.net.disconnect()
    print("collector done: ops=%d results=%d doubts=%d left=%d in_doubt=%d"
          % (dev.ops, dev.results, dev.doubts, dev.store.left(), dev.store.doubt_count()))

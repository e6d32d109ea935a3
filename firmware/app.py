# The collector application, run by main.py at boot. The collector's code loads first, at
# the bottom of the heap; then launch.py boots in phases (the TLS context, start.py,
# repair.py, the transport), each loaded, used and dropped, and is dropped in turn. Then it
# steps the collector forever (or for max_ops operations): out-of-memory and I/O errors are
# reported on the console and survived; the watchdog is fed from every wait.
#
# Boot never ends in the REPL unattended (start.cannot_start): a configuration error waits
# for maintenance, any other failure backs off and resets. Only Ctrl-C (an owner, mpremote)
# reaches the REPL, with the watchdog fed in the background so that maintenance is not cut off.
import gc
import sys
import time

import board
import collector  # loaded first, at the bottom of the heap (launch.py uses it)

DAY_MS = 86400000


def run():
    try:
        import launch

        cfg, net, store = launch.device(board)
        launch = None
        sys.modules.pop("launch", None)
        gc.collect()  # the collector's attribute table fits where boot code was
        wdt = cfg["wdt"]
        dev = collector.Collector(cfg, board, net, store, None, feed=wdt.feed if wdt else None)
    except KeyboardInterrupt:
        return
    except Exception as exc:  # noqa: BLE001 - a board that cannot start says why
        import start

        start.cannot_start(board, exc)
        return
    finally:
        sys.modules.pop("launch", None)  # boot code: dropped once the collector runs
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

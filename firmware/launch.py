# The boot's phases, in the order that keeps the heap unfragmented: the room kept for
# sealing (collector.ROOM) and the TLS context (if config.json asks for TLS) first, while the
# heap is empty; then start.py (configuration) and repair.py (coin store repair, watchdog,
# network, clock), each loaded, used and dropped in turn; then the buffers, then the
# transport's code. Run once by app.py, which drops this module too: none of this code
# occupies the heap while the device runs (about 1 KB).
import array
import gc
import json
import sys

import collector


def _before_boot(board):
    """The TLS context if config.json asks for TLS (start.py checks the file), made before
    boot code fragments the heap: the SSL context object wants about 3 KB in one piece."""
    try:
        with open("config.json") as f:
            tls = json.load(f).get("tls") is True
    except (OSError, ValueError, AttributeError):
        return None
    gc.collect()
    return _tls(board) if tls else None


def _tls(board):
    import tlsctx

    try:
        return tlsctx.context(board)
    finally:
        del sys.modules["tlsctx"]


def device(board):
    """Boots: settings checked, store repaired, transport made; returns (cfg, net, store)
    for the collector, which app.py makes once this module's code is gone."""
    room = bytearray(collector.ROOM)  # the room kept for sealing, at the bottom: in one piece
    ssl = _before_boot(board)
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
    cfg["ssl"] = (ssl or _tls(board)) if cfg["tls"] else None  # never plain MQTT when TLS is asked
    # The big buffers (the collector's two, MQTT's receive buffer) while the room boot code
    # left is in its largest pieces: before the transport's code.
    cfg["frame"] = bytearray(collector.layout(cfg)[2])
    cfg["values"] = array.array("i", bytes(4 * cfg["batch_max"]))
    cfg["room"] = room
    rx = bytearray(cfg["rx_size"]) if cfg["transport"] == "mqtt" else None
    if cfg["transport"] == "serial":
        import serial_link

        net = serial_link.SerialLink(board.uart(cfg), cfg["rx_size"])
        where = "serial " + str(cfg["serial_port"])
    else:
        import mqtt

        net = mqtt.Client(cfg["device_id"], cfg["broker_host"], cfg["broker_port"], cfg["username"],
                          cfg["password"], cfg["keepalive"], cfg["ssl"], cfg["io_timeout"], rx,
                          nodelay=board.NODELAY)
        where = "mqtt %s:%d%s" % (cfg["broker_host"], cfg["broker_port"], " (tls)" if cfg["tls"] else "")
        if hasattr(board, "wifi_board"):
            net.link = lambda: board.connect_network(cfg, None, 0)  # rejoins WiFi after an outage
    print("collector %s: service %s via %s; %d coins left, %d in doubt"
          % (cfg["device_id"], cfg["service"], where, store.left(), store.doubt_count()))
    return cfg, net, store

# Boot, first half: read and check the configuration, set the board up. Loaded once and
# dropped afterwards (app.py), so none of this code occupies the heap while the device runs;
# the second half (the coin store's repair after a power loss, the watchdog, the network) is
# repair.py, loaded after this one is gone: the heap at boot holds one half at a time.
#
# Written at provisioning, beside the firmware:
#   config.json   the settings below; nothing secret in it
#   device.key    32 raw bytes shared with the bank (top-up authentication)
#   broker.pass   the broker password (text), if the broker wants one
#   wifi.pass     the WiFi password (text), on boards with WiFi
#   bank.json     the bank's coin public key {"kid": hex, "n": hex, "e": int}
#   ca.crt        the CA that signed the broker's certificate (when tls is on; tlsctx.py)
#   coins.0.bin, state.bin   the coin store (coinstore.py)
import binascii
import json
import sys

DEFAULTS = {
    "device_id": None,  # required
    "service": None,  # required: the analysis to buy, e.g. "average"
    "transport": "mqtt",  # or "serial"
    "broker_host": "127.0.0.1",
    "broker_port": 1883,
    "username": None,  # defaults to device_id
    "tls": False,  # TLS to the broker (verified with ca.crt) where the port has ssl
    "keepalive": 30,  # seconds
    "io_timeout": 5.0,  # seconds any single network read or write may take
    "serial_port": 1,  # the UART id (the simulator also takes tcp:<port>)
    "serial_baud": 115200,
    "serial_tx": None,  # the UART's pins (required on the ESP32: UART1's defaults are flash pins)
    "serial_rx": None,
    "wifi_ssid": None,  # required for transport "mqtt" on a board with WiFi
    "ntp_host": "pool.ntp.org",  # the time server (SNTP): the clock before TLS and timestamps
    "ntp_port": 123,
    "ntp_timeout": 2.0,  # seconds per query
    "ntp_retry": 60.0,  # seconds between time server attempts while the clock is not set (then daily)
    "clock_floor": 0,  # seconds since 1970 written at provisioning: the clock when no time server answers
    "sensor": "temp0",
    "unit": "C",
    "sample_interval": 1.0,  # seconds between readings
    "batch_seconds": 60.0,  # an operation every this many seconds...
    "batch_max": 128,  # ...or as soon as this many readings are buffered (1 to 512)
    "query_timeout": 10.0,  # seconds to wait for STATUS
    "op_timeout": 30.0,  # seconds to wait for RESULT or ERROR
    "max_price": 1,  # the most coins one operation may cost (1 to 4): a dearer service is refused unpaid
    "result_max": 1024,  # largest result (bytes of JSON) accepted; sizes the receive buffer
    "low_coins": 100,  # top up below this many coins (0: never)
    "topup_count": 20,  # coins per top-up (1 to 100); 20 keeps the answer small enough for a 64 KiB heap
    "topup_retry": 300.0,  # seconds between top-up attempts
    "watchdog_ms": 60000,  # hardware watchdog where the board has one (0: off)
    "max_ops": 0,  # stop after this many operations (0: never); tests and benches
    "seed": 1,  # the simulated sensor's seed
    "sensor_pin": None,  # esp32: a DHT22 on this GPIO (None: the chip's own sensor)
    "led_pin": None,  # esp32: the LED GPIO (None: 2)
}


class ConfigError(Exception):
    pass


def _read(name, mode="rb"):
    with open(name, mode) as f:
        return f.read()


def _secret(name):
    try:
        return _read(name, "r").strip()
    except OSError:
        return None


def _check(ok, what):
    if not ok:
        raise ConfigError(what)


def load(path="config.json"):
    """The settings as a dict, defaults filled in, secrets and the bank's key loaded."""
    try:
        given = json.loads(_read(path, "r"))
        meta = json.loads(_read("bank.json", "r"))
        key = _read("device.key")
    except OSError as exc:
        raise ConfigError("missing file (%s): provision the device first" % exc)
    except ValueError:
        raise ConfigError("config.json or bank.json is not valid JSON")
    cfg = dict(DEFAULTS)
    for k in given:
        _check(k in DEFAULTS, "config.json: unknown key " + k)
        cfg[k] = given[k]
    _check(cfg["device_id"] and cfg["service"], "config.json: device_id and service are required")
    _check(1 <= cfg["batch_max"] <= 512, "config.json: batch_max must be 1 to 512")
    _check(1 <= cfg["topup_count"] <= 100, "config.json: topup_count must be 1 to 100")
    _check(cfg["max_price"] in (1, 2, 3, 4), "config.json: max_price must be 1 to 4 coins")
    _check(16 <= cfg["result_max"] <= 4096, "config.json: result_max must be 16 to 4096")
    # The readings must pass the analysts' schema (PROTOCOL.md 5), or the coin pays for FAILED.
    # sensor 1 to 32 characters, unit 0 to 16 ("sensor" < "t" < "unit"), printable ASCII with
    # no quote or backslash: they go into the JSON unescaped. Terse on purpose: heap.
    for k in ("sensor", "unit"):
        v = cfg[k]
        _check(type(v) is str and len(v) <= (32 if k < "t" else 16) and (v or k > "s")
               and all(" " <= c <= "~" and c not in "\"\\" for c in v), "config.json: bad " + k)
    v = cfg["sample_interval"]
    _check(type(v) in (int, float) and 0 < v <= 86400, "config.json: bad sample_interval")
    _check(len(key) == 32, "device.key must be 32 bytes")
    _check(cfg["transport"] in ("mqtt", "serial"), "config.json: transport must be mqtt or serial")
    try:
        cfg["bank"] = (binascii.unhexlify(meta["kid"]), (int(meta["n"], 16), int(meta["e"])))
    except (KeyError, ValueError, TypeError):
        raise ConfigError("bank.json is malformed")
    cfg["username"] = cfg["username"] or cfg["device_id"]
    cfg["device_key"] = key
    cfg["password"] = _secret("broker.pass")
    cfg["wifi_password"] = _secret("wifi.pass")
    return cfg


def rx_size(cfg):
    """The one receive buffer: the largest RESULT or TOPUP_RESPONSE plus an MQTT header."""
    result = 68 + (cfg["result_max"] // 16 + 1) * 16
    topup = 72 + ((4 + 32 * cfg["topup_count"]) // 16 + 1) * 16
    return max(result, topup) + 68


def configure(board):
    """Returns the settings, checked (raises ConfigError); the board is set up, every random
    byte conditioned. The store, the watchdog and the network come next (repair.ready)."""
    import session
    import ucrypto

    if hasattr(board, "random"):  # a board's raw source (not the kind sim board's host one)
        import entropy

        entropy.install(board, ucrypto)  # every random byte conditioned, from the first op_id on
        del sys.modules["entropy"]
    cfg = load()
    if session.key_id(ucrypto, cfg["bank"][1][0]) != cfg["bank"][0]:
        raise ConfigError("bank.json: the kid does not match the key")
    mqtt = cfg["transport"] == "mqtt"
    _check(not (mqtt and hasattr(board, "wifi_board") and not cfg["wifi_ssid"]),
           "config.json: transport mqtt needs wifi_ssid (or transport serial)")
    cfg["rx_size"] = rx_size(cfg)
    # The readings' JSON: '{"sensor":"..","unit":"..","start":N,"interval":..,"values":[' and
    # 8 bytes a value ("-123.45,"; a longer one waits for the next batch).
    head = 33 + len(cfg["sensor"]) + len(cfg["unit"]) + 10 + 24 + len(str(cfg["sample_interval"]))
    cfg["json_size"] = min(4096, head + 8 * cfg["batch_max"] + 13)
    try:
        board.setup(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc))
    return cfg


def boot(board):
    """Returns (settings, coin store), both checked; the board is set up, its watchdog
    running (cfg["wdt"]) and, for MQTT, on the network with its clock set if it can be.
    app.py runs the two halves itself, each loaded alone: configure, then repair.ready."""
    cfg = configure(board)
    return cfg, _repair().ready(board, cfg)


def _repair():
    import repair

    del sys.modules["repair"]  # dropped with its last use
    return repair


def open_store():
    """The coin store, repaired (repair.py); for maintenance (mpremote) and tests."""
    return _repair().open_store()


BACKOFF_S = 15  # after a failed boot, before the reset that tries again


def _sleep(seconds):
    import time

    end = time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        time.sleep_ms(200)


def cannot_start(board, exc):
    """Says why the device cannot start. A configuration error waits for maintenance (said
    again every minute; boot.py's timer feeds the watchdog); anything else backs off and
    resets the board, never leaving it at the REPL."""
    if type(exc).__name__ == "ConfigError":  # this module was loaded again: not the same class
        while True:  # until an owner fixes it (Ctrl-C, mpremote)
            print("collector cannot start: %s; waiting for maintenance" % (exc,))
            _sleep(60)
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    print("collector cannot start: %r; resetting in %d s" % (exc, BACKOFF_S))
    _sleep(BACKOFF_S)  # unfed: a short watchdog resets sooner, which is as good
    if hasattr(board, "reset"):
        board.reset()
    sys.exit(1)  # a board without reset (the kind sim board): the process ends

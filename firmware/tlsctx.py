# The TLS client context, made once at boot by app.py after start.py is dropped: the SSL
# context object takes about 3 KB of the MicroPython heap in one piece (mbedTLS's own
# buffers come from the C heap: the unix port's malloc, the ESP32's IDF heap), which a heap
# still holding start.py's code cannot always give. Loaded once, then dropped.
import binascii


def context(board, ca_file="ca.crt"):
    """A client TLS context that verifies the broker against ca_file (PEM or DER), through
    the board's wrapper if it has one (the sim board checks certificate dates by its clock)."""
    try:
        # MicroPython's C module itself: ssl is a Python module around it (ssl.py, frozen)
        # whose classes and functions would take about 1 KB of heap for good.
        import tls
    except ImportError:  # CPython
        import ssl

        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        with open(ca_file, "rb") as f:
            ca = f.read()
        if ca.startswith(b"-----"):  # PEM: MicroPython's mbedtls binding takes DER
            body = ca.split(b"-----BEGIN CERTIFICATE-----")[1].split(b"-----END")[0]
            ca = binascii.a2b_base64(body.replace(b"\n", b"").replace(b"\r", b""))
        ctx.load_verify_locations(ca)
        ca = None
    return board.tls(ctx) if hasattr(board, "tls") else ctx

# Setting the board's clock by SNTP (RFC 4330), loaded for the occasion and dropped. Neither
# board keeps time across a power cut (ESP32 starts at 2000-01-01, Pico W at 2021-01-01), and
# mbedTLS refuses a broker certificate that is "not yet valid" at the board's time, so the
# clock is set before the first TLS connection and again once a day. When no time server
# answers, a TLS device sets its clock to clock_floor (the provisioning time): certificates
# issued before it verify, and its readings still carry no timestamp (docs/FIRMWARE.md).
import socket
import struct
import time

_NTP_1970 = 2208988800  # seconds from 1900 to 1970


def query(host, port, timeout_s=2.0):
    """The server's time in seconds since 1970; OSError or ValueError if none came."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout_s)
        pkt = bytearray(48)
        pkt[0] = 0x23  # version 4, mode 3 (client)
        s.sendto(pkt, addr)
        data = s.recv(48)
    finally:
        s.close()
    if len(data) < 48 or data[0] & 7 != 4 or not 1 <= data[1] <= 15:
        raise ValueError("not an NTP server answer")
    return struct.unpack(">I", data[40:44])[0] - _NTP_1970


def sync(board, cfg, feed=None, tries=3):
    """Sets the board's clock from cfg's time server; True if it answered."""
    for _ in range(tries):
        if feed:
            feed()
        try:
            t = query(cfg["ntp_host"], cfg["ntp_port"], cfg["ntp_timeout"])
        except (OSError, ValueError) as exc:
            print("clock: no answer from %s (%s)" % (cfg["ntp_host"], exc))
            continue
        if cfg["clock_floor"] and t < cfg["clock_floor"]:
            print("clock: %s gave a time before provisioning; ignored" % cfg["ntp_host"])
            return False
        board.set_time(t)
        print("clock: set from %s" % cfg["ntp_host"])
        return True
    return False


def floor(board, cfg):
    """No time server: a clock no earlier than provisioning, so TLS can verify the broker."""
    if cfg["clock_floor"] and board.clock() < cfg["clock_floor"]:
        board.set_time(cfg["clock_floor"], False)
        print("clock: no time server; set to the provisioning time (readings carry no timestamp)")

"""Generates the Mosquitto configuration for an ecoin broker (``ecoin-gateway broker-config``).

Two TLS listeners, each with its own authentication and ACLs (``per_listener_settings``):

* the device listener: one username and password per device (the device id), and a pattern
  ACL so a device may only write ``ecoin/dev/<its id>/up`` and read ``ecoin/dev/<its id>/down``;
* the service listener: a client certificate from the project CA is required and its CN is
  the user name; analysts may only use service topics and gateway reply topics, gateways
  what routing needs.

Limits (Mosquitto 2.0; mosquitto.conf(5) says which options exist per listener):

* client ids: on the device listener the client id is replaced by the user name
  (``use_username_as_clientid``), so a device can only ever hold its own id and cannot
  disconnect the gateway, an analyst or another device by taking theirs (Mosquitto's ids are
  shared by all listeners; device ids may not start with the services' ``ecoin-`` prefix).
  The service listener cannot do the same while one certificate holds several connections
  (the gateway's edge and upstream links, an analyst's link per service): only certificate
  holders reach it.
* ``max_packet_size`` is global in Mosquitto 2.0: it is set just above the largest valid
  frame plus MQTT overhead, which is also the largest packet any service sends, so a larger
  publish disconnects its sender before the gateway sees a byte of it.
* TLS 1.2 only with AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305); TLS 1.3 as is.
* retained messages cannot be refused per topic by Mosquitto's ACL file: the gateway clears
  and ignores any retained message on its reply topic (upstream.py).

Passwords are random, kept in ``credentials.toml`` (0600, for provisioning the devices) and
reused on the next run, so regenerating never locks a device out. The password file uses
the format ``mosquitto_passwd`` writes (PBKDF2-SHA512).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tomllib
from pathlib import Path

import tomli_w

from ecoin.common import files, topics
from ecoin.gateway.config import BrokerConf
from ecoin.protocol import wire

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default; passwords are random, not guessable
# Fixed header (5), the longest topic (2 + 47), packet id (2) and MQTT 5 properties (response
# topic, correlation data, message expiry: under 100) fit in 512 bytes with room to spare.
MQTT_OVERHEAD = 512
MAX_PACKET_SIZE = wire.FRAME_MAX + MQTT_OVERHEAD
# TLS 1.2: forward secret and authenticated encryption only (no CBC, no SHA-1 MACs, no RSA
# key exchange). OpenSSL names; TLS 1.3 suites are AEAD already.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """One password in mosquitto's ``$7$`` format."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def load_credentials(path: Path) -> dict[str, str]:
    """device id -> password, from a credentials.toml written by ``generate``."""
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in tomllib.loads(path.read_text()).get("devices", {}).items()}


def _credentials(path: Path, devices: list[str]) -> dict[str, str]:
    known = load_credentials(path)
    return {d: known.get(d) or secrets.token_urlsafe(24) for d in devices}


def device_acl() -> str:
    return (
        "# ecoin devices: each user (= device id) only its own two topics.\n"
        f"pattern write {topics.device_up('%u')}\n"
        f"pattern read {topics.device_down('%u')}\n"
    )


def service_acl(c: BrokerConf) -> str:
    lines = ["# ecoin services: the user name is the certificate's CN."]
    for gw in c.gateways:
        lines += [
            f"\nuser {gw}",
            f"topic read {topics.DEVICE_UP_FILTER}",
            f"topic write {topics.DEVICE_DOWN_FILTER}",
            f"topic write {topics.SERVICE_OP_FILTER}",
            f"topic read {topics.ANNOUNCE_FILTER}",
            f"topic readwrite {topics.gateway_tree(gw)}",
        ]
    for analyst, services in sorted(c.analysts.items()):
        if not services:  # "+" would let it read every operation and announce any service
            raise ValueError(f"analyst {analyst}: list the services it offers")
        lines.append(f"\nuser {analyst}")
        for svc in services:
            lines += [
                f"topic read {topics.service_op(svc)}",
                f"topic write {topics.announcement(svc, analyst)}",
            ]
        lines.append(f"topic write {topics.REPLY_FILTER}")
    return "\n".join(lines) + "\n"


def mosquitto_conf(c: BrokerConf, out: Path) -> str:
    tls = f"cafile {c.ca}\ncertfile {c.cert}\nkeyfile {c.key}\ntls_version tlsv1.2\nciphers {TLS12_CIPHERS}\n"
    device_tls = tls + "require_certificate false\n" if c.device_tls else ""
    device_transport = "TLS" if c.device_tls else "PLAIN TCP (simulator on loopback only)"
    return (
        "# Generated by `ecoin-gateway broker-config`; regenerate rather than edit.\n"
        "per_listener_settings true\n"
        "set_tcp_nodelay true\n"
        f"max_inflight_messages {c.max_inflight}\n"
        "max_queued_messages 10000\n"
        "# Global in Mosquitto 2.0: the largest valid frame plus MQTT overhead.\n"
        f"max_packet_size {MAX_PACKET_SIZE}\n"
        f"\n# Devices: {device_transport}, one user name and password each.\n"
        f"listener {c.device_port} {c.bind}\n"
        f"{device_tls}"
        "allow_anonymous false\n"
        "use_username_as_clientid true\n"
        f"password_file {out / 'passwords'}\n"
        f"acl_file {out / 'acl-devices'}\n"
        "\n# Analysts and gateways: TLS with a client certificate from the project CA (CN = user).\n"
        f"listener {c.service_port} {c.bind}\n"
        f"{tls}"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "allow_anonymous false\n"
        f"acl_file {out / 'acl-services'}\n"
    )


def generate(c: BrokerConf, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Writes mosquitto.conf, passwords, acl-devices, acl-services and credentials.toml into
    the output directory; returns their paths."""
    out = Path(out_dir or c.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    creds_path = out / "credentials.toml"
    creds = _credentials(creds_path, c.devices)
    paths = {
        "conf": out / "mosquitto.conf",
        "passwords": out / "passwords",
        "acl_devices": out / "acl-devices",
        "acl_services": out / "acl-services",
        "credentials": creds_path,
    }
    files.write_atomic(creds_path, tomli_w.dumps({"devices": creds}), 0o600)
    files.write_atomic(
        paths["passwords"], "".join(f"{d}:{hash_password(p)}\n" for d, p in creds.items()), 0o640
    )
    files.write_atomic(paths["acl_devices"], device_acl())
    files.write_atomic(paths["acl_services"], service_acl(c))
    files.write_atomic(paths["conf"], mosquitto_conf(c, out))
    return paths

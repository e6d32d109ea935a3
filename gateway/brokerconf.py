"""Generates the Mosquitto configuration for an ecoin broker (``ecoin-gateway broker-config``).

Two TLS listeners, each with its own authentication and ACLs (``per_listener_settings``):

* the device listener: one username and password per device (the device id), and a pattern
  ACL so a device may only write ``ecoin/dev/<its id>/up`` and read ``ecoin/dev/<its id>/down``;
* the service listener: a client certificate from the project CA AND a password. Each
  connection logs in with its own user name, which is its client id (``use_username_as_clientid``:
  ``ecoin-gw-<id>-edge``, ``ecoin-gw-<id>-up``, ``ecoin-analyst-<id>-<instance>-<service>``),
  with its party's password (one per gateway or analyst); the ACLs give each user name only
  the topics of that one connection.

Limits (Mosquitto 2.0; mosquitto.conf(5) says which options exist per listener):

* client ids: Mosquitto shares ids across listeners, and a second connection with an id
  disconnects the first. Both listeners replace the client id by the user name
  (``use_username_as_clientid``), so a device or a certificate holder can only ever hold the
  ids its password opens and cannot disconnect the gateway, an analyst or a device by taking
  theirs (device ids may not start with the services' ``ecoin-`` prefix). On the service
  listener the password is the identity: Mosquitto 2.0 cannot check that the certificate's
  CN belongs to the user name. The other way, ``use_identity_as_username`` (CN = user), reads
  no password at all and would bind ids to the CN: one connection per certificate, while
  the gateway holds two and an analyst one per service and instance. The certificate still
  keeps everyone without one off the listener (devices, a leaked password alone).
* ``max_packet_size`` is global in Mosquitto 2.0: it is set just above the largest valid
  frame plus MQTT overhead, which is also the largest packet any service sends, so a larger
  publish disconnects its sender before the gateway sees a byte of it.
* TLS 1.2 only with AEAD suites (ECDHE with AES-GCM or ChaCha20-Poly1305); TLS 1.3 as is.
* retained messages cannot be refused per topic by Mosquitto's ACL file: the gateway clears
  and ignores any retained message on its reply topic (upstream.py).

Passwords are random, kept in ``credentials.toml`` (0600: the devices' for provisioning, the
services' under ``[services]``, each also in ``secrets/<party>.password`` to copy to that
party) and reused on the next run, so regenerating never locks anybody out. The password
files use the format ``mosquitto_passwd`` writes (PBKDF2-SHA512).
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


def load_credentials(path: Path, table: str = "devices") -> dict[str, str]:
    """device id (or, with ``table="services"``, gateway or analyst) -> password, from a
    credentials.toml written by ``generate``."""
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in tomllib.loads(path.read_text()).get(table, {}).items()}


def write_credentials(path: Path, devices: dict[str, str], services: dict[str, str]) -> None:
    files.write_atomic(path, tomli_w.dumps({"devices": devices, "services": services}), 0o600)


def _credentials(known: dict[str, str], names: list[str]) -> dict[str, str]:
    return {n: known.get(n) or secrets.token_urlsafe(24) for n in names}


def _instances(c: BrokerConf, analyst: str) -> list[str]:
    return c.instances.get(analyst, [topics.DEFAULT_INSTANCE])


def service_users(c: BrokerConf) -> dict[str, str]:
    """user name (= client id) -> its party, for every connection of the service listener."""
    users = {topics.gateway_client(gw, link): gw for gw in c.gateways for link in topics.GATEWAY_LINKS}
    for analyst, services in sorted(c.analysts.items()):
        for instance in _instances(c, analyst):
            users.update({topics.analyst_client(analyst, instance, svc): analyst for svc in services})
    return users


def device_acl() -> str:
    return (
        "# ecoin devices: each user (= device id) only its own two topics.\n"
        f"pattern write {topics.device_up('%u')}\n"
        f"pattern read {topics.device_down('%u')}\n"
    )


def _gateway_acl(gw: str, link: str) -> list[str]:
    if link == "edge":
        return [f"topic read {topics.DEVICE_UP_FILTER}", f"topic write {topics.DEVICE_DOWN_FILTER}"]
    return [
        f"topic write {topics.SERVICE_OP_FILTER}",
        f"topic read {topics.ANNOUNCE_FILTER}",
        f"topic readwrite {topics.gateway_tree(gw)}",
    ]


def service_acl(c: BrokerConf) -> str:
    """One block per connection's user name: only what that connection does."""
    lines = ["# ecoin services: the user name is the connection's client id."]
    for gw in c.gateways:
        for link in topics.GATEWAY_LINKS:
            lines += [f"\nuser {topics.gateway_client(gw, link)}", *_gateway_acl(gw, link)]
    for analyst, services in sorted(c.analysts.items()):
        if not services:  # "+" would let it read every operation and announce any service
            raise ValueError(f"analyst {analyst}: list the services it offers")
        for instance in _instances(c, analyst):
            for svc in services:
                lines += [
                    f"\nuser {topics.analyst_client(analyst, instance, svc)}",
                    f"topic read {topics.service_op(svc)}",
                    f"topic write {topics.announcement(svc, analyst)}",
                    f"topic write {topics.REPLY_FILTER}",
                ]
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
        "\n# Analysts and gateways: TLS with a client certificate from the project CA and a\n"
        "# password; one user name per connection, which is also its client id.\n"
        f"listener {c.service_port} {c.bind}\n"
        f"{tls}"
        "require_certificate true\n"
        "allow_anonymous false\n"
        "use_username_as_clientid true\n"
        f"password_file {out / 'passwords-services'}\n"
        f"acl_file {out / 'acl-services'}\n"
    )


def _parties(c: BrokerConf) -> list[str]:
    both = set(c.gateways) & set(c.analysts)
    if both:  # one password each: a shared name would share it
        raise ValueError(f"{', '.join(sorted(both))}: both a gateway and an analyst")
    return [*c.gateways, *sorted(c.analysts)]


def _password_lines(users: dict[str, str], passwords: dict[str, str]) -> str:
    return "".join(f"{user}:{hash_password(passwords[owner])}\n" for user, owner in users.items())


def _write_secrets(folder: Path, services: dict[str, str]) -> None:
    """One file per party, to copy to its host; a party no longer configured loses its own."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for old in folder.glob("*.password"):
        if old.stem not in services:
            old.unlink()
    for party, password in services.items():
        files.write_atomic(folder / f"{party}.password", password + "\n", 0o600)


def generate(c: BrokerConf, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Writes mosquitto.conf, passwords, passwords-services, acl-devices, acl-services,
    credentials.toml and secrets/<party>.password into the output directory; returns their
    paths."""
    out = Path(out_dir or c.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    creds_path = out / "credentials.toml"
    devices = _credentials(load_credentials(creds_path), c.devices)
    services = _credentials(load_credentials(creds_path, "services"), _parties(c))
    paths = {
        "conf": out / "mosquitto.conf",
        "passwords": out / "passwords",
        "service_passwords": out / "passwords-services",
        "acl_devices": out / "acl-devices",
        "acl_services": out / "acl-services",
        "credentials": creds_path,
        "secrets": out / "secrets",
    }
    write_credentials(creds_path, devices, services)
    _write_secrets(paths["secrets"], services)
    files.write_atomic(paths["passwords"], _password_lines({d: d for d in devices}, devices), 0o640)
    files.write_atomic(paths["service_passwords"], _password_lines(service_users(c), services), 0o640)
    files.write_atomic(paths["acl_devices"], device_acl())
    files.write_atomic(paths["acl_services"], service_acl(c))
    files.write_atomic(paths["conf"], mosquitto_conf(c, out))
    return paths

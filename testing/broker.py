"""A real Mosquitto run from exactly the files ``ecoin-gateway broker-config`` writes (TLS,
client certificates, passwords, ACLs): the one broker setup that tests, benchmarks and the
demo share, so what they meet is what a deployment runs.

    b = generated_broker(tmp / "mq", pki, analysts={"alice": ["echo"]}, devices=["dev-a"])
    with b.mosquitto:                        # started; .port is the service listener
        creds = b.credentials()              # device -> password
        password_file(pki, "alice")          # alice's broker password, beside her key

The services' broker passwords live in the PKI directory (``mqtt/<party>.password``, made on
first use), where a party keeps what the operator copied from broker-config's
``secrets/<party>.password``; every generated broker on that PKI takes them, so analysts
and gateways started on it find theirs without being told which broker they meet.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecoin.common import files
from ecoin.gateway import brokerconf
from ecoin.gateway.config import BrokerConf
from ecoin.testing.servers import Mosquitto, free_port


@dataclass(frozen=True)
class GeneratedBroker:
    conf: BrokerConf  # its ports: device_port (passwords), service_port (certificates and passwords)
    paths: dict[str, Path]  # what brokerconf.generate wrote
    mosquitto: Mosquitto  # not started; its ``port`` is the service listener

    def credentials(self) -> dict[str, str]:
        return brokerconf.load_credentials(self.paths["credentials"])


def password_file(pki: Path, party: str) -> Path:
    """The broker password of a gateway or analyst, kept in the PKI directory."""
    path = Path(pki) / "mqtt" / f"{party}.password"
    try:
        files.create_new(path, (secrets.token_urlsafe(24) + "\n").encode())
    except FileExistsError:
        pass
    return path


def password(pki: Path, party: str) -> str:
    return password_file(pki, party).read_text().strip()


def seed_passwords(out: Path, pki: Path, parties: Sequence[str]) -> None:
    """Puts the parties' passwords from the PKI into ``out/credentials.toml``, which
    ``broker-config`` then keeps (as it keeps any password it finds there)."""
    creds = out / "credentials.toml"
    out.mkdir(parents=True, exist_ok=True)
    known = brokerconf.load_credentials(creds, "services")
    ours = {p: password(pki, p) for p in parties}
    brokerconf.write_credentials(creds, brokerconf.load_credentials(creds), {**known, **ours})


def generated_broker(
    workdir: Path,
    pki: Path,
    *,
    analysts: dict[str, list[str]],
    gateways: Sequence[str] = ("gw1",),
    devices: Sequence[str] = (),
    device_tls: bool = True,
    instances: dict[str, list[str]] | None = None,
) -> GeneratedBroker:
    """The configuration in ``workdir/conf``, the broker's own files in ``workdir``, both
    listeners on free loopback ports; certificates from ``pki`` (an ``ecoin-pki`` tree)."""
    conf = BrokerConf(
        out_dir=str(workdir / "conf"),
        ca=str(pki / "ca.crt"),
        cert=str(pki / "broker" / "broker.crt"),
        key=str(pki / "broker" / "broker.key"),
        bind="127.0.0.1",
        device_port=free_port(),
        service_port=free_port(),
        devices=list(devices),
        analysts=analysts,
        instances=instances or {},
        gateways=list(gateways),
        device_tls=device_tls,
    )
    seed_passwords(workdir / "conf", pki, [*gateways, *analysts])
    paths = brokerconf.generate(conf)
    return GeneratedBroker(conf, paths, Mosquitto(workdir, paths["conf"].read_text(), conf.service_port))

"""A real Mosquitto run from exactly the files ``ecoin-gateway broker-config`` writes (TLS,
client certificates, device passwords, ACLs): the one broker setup that tests, benchmarks
and the demo share, so what they meet is what a deployment runs.

    b = generated_broker(tmp / "mq", pki, analysts={"alice": ["echo"]}, devices=["dev-a"])
    with b.mosquitto:                        # started; .port is the service listener
        creds = b.credentials()              # device -> password
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecoin.gateway import brokerconf
from ecoin.gateway.config import BrokerConf
from ecoin.testing.servers import Mosquitto, free_port


@dataclass(frozen=True)
class GeneratedBroker:
    conf: BrokerConf  # its ports: device_port (passwords), service_port (client certificates)
    paths: dict[str, Path]  # what brokerconf.generate wrote
    mosquitto: Mosquitto  # not started; its ``port`` is the service listener

    def credentials(self) -> dict[str, str]:
        return brokerconf.load_credentials(self.paths["credentials"])


def generated_broker(
    workdir: Path,
    pki: Path,
    *,
    analysts: dict[str, list[str]],
    gateways: Sequence[str] = ("gw1",),
    devices: Sequence[str] = (),
    device_tls: bool = True,
) -> GeneratedBroker:
    """The configuration in ``workdir/conf``, the broker's own files in ``workdir``, both
    listeners on free loopback ports; certificates from ``pki`` (an ``ecoin-pki`` tree)."""
    conf = BrokerConf(
        ca=str(pki / "ca.crt"),
        cert=str(pki / "broker" / "broker.crt"),
        key=str(pki / "broker" / "broker.key"),
        bind="127.0.0.1",
        device_port=free_port(),
        service_port=free_port(),
        devices=list(devices),
        analysts=analysts,
        gateways=list(gateways),
        device_tls=device_tls,
    )
    paths = brokerconf.generate(conf, workdir / "conf")
    return GeneratedBroker(conf, paths, Mosquitto(workdir, paths["conf"].read_text(), conf.service_port))

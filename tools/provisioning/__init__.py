"""Provisioning ecoin devices (the library behind ``ecoin-provision``; docs/PROVISIONING.md).

from ecoin.tools.provisioning import BankParams, Broker, provision_device, install_bundle, claim_refunds

bank = BankParams.from_pki("https://127.0.0.1:8443", pki_dir, "olive")   # or a BankClient
bundle = provision_device(bank, "dev-1", "average", coins=1000, out_dir=run / "devices",
                          broker=Broker(host="127.0.0.1", port=1883))
install_bundle(bundle, SimTarget(flash_dir, create=True))      # or BoardTarget("/dev/ttyUSB0")
report = claim_refunds(bank, "dev-1", flash_dir=flash_dir)       # or port="/dev/ttyUSB0"
"""

from .bundle import Broker, provision_device, request_id
from .common import BankParams, Progress, ProvisionError, short_hash
from .install import find_bundle, install_bundle, verify
from .refund import CoinClaim, RefundReport, claim_refunds, device_status
from .targets import BoardTarget, SimTarget, Store, read_store, target

__all__ = [
    "BankParams",
    "BoardTarget",
    "Broker",
    "CoinClaim",
    "Progress",
    "ProvisionError",
    "RefundReport",
    "SimTarget",
    "Store",
    "claim_refunds",
    "device_status",
    "find_bundle",
    "install_bundle",
    "provision_device",
    "read_store",
    "request_id",
    "short_hash",
    "target",
    "verify",
]

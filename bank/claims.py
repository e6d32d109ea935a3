"""Claiming a device by the QR code on its sticker, handing it to another owner, and
decommissioning it (docs/BANK_API.md "Claims by QR code"; the URI is in docs/PROVISIONING.md).

At provisioning the owner who provisions (the installer, or the final owner) *offers* the
device for claiming with the SHA-256 of a one-time secret; only that hash is stored, so
a copy of the ledger cannot claim anything. Whoever shows the secret (it is in the URI on
the sticker) pairs the device with their owner account, once: the device, its batches and
so its coins (already paid for: a device changes hands with the coins it holds, like a
prepaid card) move to the claimer. The same secret again is refused (``already_claimed``)
and logged, without the secret. A wrong secret gets the same answer as an unknown device.

Decommissioning refunds the device's outstanding coins to its owner, erases its sealed
key (top-ups and refund claims then find no device) and closes its open claim. Every
offer, claim, transfer and decommissioning is an entry of the audit chain.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from ecoin.common import bank_errors as errors

from .ledger import Ledger
from .store import COINS, Account, Tx

log = logging.getLogger("ecoin.bank")


def secret_hash(secret: str) -> bytes:
    """What the bank stores and compares: SHA-256 of the secret's text, as in the URI. The
    secret is 128+ random bits, so a fast hash is enough (nothing to guess from it)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Claimed:
    device_id: str
    owner: str
    previous: str


class Claims:
    """The claim rules, on the ledger's store and accounts (one transaction each)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _owned(self, tx: Tx, owner: str, device_id: str) -> Account:
        account = self.ledger._account(tx, owner, "owner")
        self.ledger._device(tx, account, device_id)
        return account

    def offer(self, owner: str, device_id: str, digest: bytes) -> None:
        """Opens a claim (replacing an unused one: a new sticker voids the old)."""
        if len(digest) != 32:
            raise errors.Malformed("secret_hash must be 32 bytes (SHA-256 of the claim secret)")

        def offer(tx: Tx) -> None:
            now = self.ledger.now()
            account = self._owned(tx, owner, device_id)
            tx.q("DELETE FROM device_claims WHERE device = ? AND claimed_by IS NULL", (device_id,))
            cur = tx.q(
                "INSERT INTO device_claims (secret_hash, device, armed_by, armed) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (secret_hash) DO NOTHING",
                (digest, device_id, account.id, now),
            )
            if cur.rowcount != 1:
                raise errors.Exists("this claim secret was used before: make a new one")
            tx.audit("claim_offered", {"device": device_id, "owner": owner}, now)

        self.ledger.store.run(offer)

    def claim(self, claimer: str, device_id: str, secret: str) -> Claimed:
        """Pairs the device with ``claimer`` if ``secret`` opens its claim, once."""
        digest = secret_hash(secret)
        try:
            return self.ledger.store.run(lambda tx: self._claim(tx, claimer, device_id, digest))
        except (errors.UnknownDevice, errors.AlreadyClaimed) as exc:
            log.warning(
                "claim_refused", extra={"device": device_id, "claimer": claimer, "code": exc.code}
            )  # never the secret
            raise

    def _claim(self, tx: Tx, claimer: str, device_id: str, digest: bytes) -> Claimed:
        now = self.ledger.now()
        account = self.ledger._account(tx, claimer, "owner")
        rows = tx.q(
            "SELECT secret_hash, claimed_by FROM device_claims WHERE device = ?", (device_id,)
        ).fetchall()
        match = [r for r in rows if hmac.compare_digest(bytes(r[0]), digest)]
        device = tx.device(device_id)
        if not match or device is None:
            raise errors.UnknownDevice(f"no open claim of device {device_id} with this secret")
        cur = tx.q(
            "UPDATE device_claims SET claimed_by = ?, claimed = ?"
            " WHERE secret_hash = ? AND claimed_by IS NULL",
            (account.id, now, digest),
        )
        if cur.rowcount != 1:
            raise errors.AlreadyClaimed(f"the claim secret of {device_id} was used before")
        previous = tx.account_by_id(device.owner).name
        _move(tx, device_id, account.id)
        tx.audit("claim", {"device": device_id, "from": previous, "to": claimer}, now)
        return Claimed(device_id, claimer, previous)

    def transfer(self, owner: str, device_id: str, to: str) -> Claimed:
        """Hands the device (and its coins) to another owner; its open claim is closed."""

        def transfer(tx: Tx) -> Claimed:
            now = self.ledger.now()
            account = self._owned(tx, owner, device_id)
            target = self.ledger._account(tx, to, "owner")
            if target.id == account.id:
                raise errors.Malformed(f"{device_id} is already {to}'s")
            tx.q("DELETE FROM device_claims WHERE device = ? AND claimed_by IS NULL", (device_id,))
            _move(tx, device_id, target.id)
            tx.audit("transfer", {"device": device_id, "from": owner, "to": to}, now)
            return Claimed(device_id, to, owner)

        return self.ledger.store.run(transfer)

    def decommission(self, owner: str, device_id: str) -> int:
        """Refunds the device's outstanding coins to its owner and revokes its key.
        Returns the number of coins refunded."""

        def decommission(tx: Tx) -> int:
            now = self.ledger.now()
            account = self._owned(tx, owner, device_id)
            done = sorted(
                bytes(r[0])
                for r in tx.q(
                    "UPDATE coins SET state = 2 WHERE state = 0"
                    " AND batch IN (SELECT id FROM batches WHERE device = ? AND owner = ?) RETURNING hash",
                    (device_id, account.id),
                ).fetchall()
            )
            if done:
                tx.transfer(self.ledger._sys(tx, COINS), account.id, len(done), "refund", now)
                body = {"owner": owner, "device": device_id, "coins": [h.hex() for h in done]}
                tx.audit("refund", body, now)
            tx.q("UPDATE devices SET retired = ?, key_enc = ? WHERE id = ?", (now, b"", device_id))
            tx.q("DELETE FROM device_claims WHERE device = ? AND claimed_by IS NULL", (device_id,))
            tx.audit("decommission", {"device": device_id, "owner": owner, "refunded": len(done)}, now)
            return len(done)

        return self.ledger.store.run(decommission)


def _move(tx: Tx, device_id: str, owner: int) -> None:
    tx.q("UPDATE devices SET owner = ? WHERE id = ? AND retired IS NULL", (owner, device_id))
    tx.q("UPDATE batches SET owner = ? WHERE device = ?", (owner, device_id))


def audit_problems(tx: Tx, events: dict[str, int]) -> list[str]:
    """For ``ecoin-bank audit``: the claims table and the devices agree with the chain's
    ``claim`` and ``decommission`` entries, and no decommissioned device has coins left."""
    problems = []
    claimed = int(tx.q("SELECT COUNT(*) FROM device_claims WHERE claimed_by IS NOT NULL").fetchone()[0])
    if claimed != events.get("claim", 0):
        problems.append(f"{claimed} claims used but the audit log records {events.get('claim', 0)}")
    retired = int(tx.q("SELECT COUNT(*) FROM devices WHERE retired IS NOT NULL").fetchone()[0])
    if retired != events.get("decommission", 0):
        problems.append(
            f"{retired} devices decommissioned but the audit log records {events.get('decommission', 0)}"
        )
    left = int(
        tx.q(
            "SELECT COUNT(*) FROM coins c JOIN batches b ON b.id = c.batch JOIN devices d ON d.id = b.device"
            " WHERE d.retired IS NOT NULL AND c.state = 0"
        ).fetchone()[0]
    )
    if left:
        problems.append(f"{left} coins of decommissioned devices are still outstanding")
    return problems

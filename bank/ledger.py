"""The bank's business rules, between the router (``router``) and the storage (``store``).

Every operation is one transaction through ``Store.run``; inside it the decisions are
taken by conditional statements (spend, refund, debit, counter), and the ledger only acts
on what they changed. Money moves in a double-entry journal between accounts: ``@treasury``
funds owners, a withdrawal moves 1 unit per coin from the owner to ``@coins`` (coins in
circulation), and a redemption, refund or expiry moves it on to the analyst or back to the
owner. Every change is also appended to the hash-chained audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ecoin.common import bank_errors as errors
from ecoin.common import crypto, names
from ecoin.protocol import session, wire

from . import policy, usage
from . import spend as spending
from .books import Books
from .keys import Item, Opened, Opener, Refused
from .store import (
    COINS,
    REFUNDED,
    TREASURY,
    Account,
    Batch,
    CoinState,
    Conflict,
    Spend,
    Store,
    Tx,
)
from .vault import Vault, VaultError, coin_hash

KINDS = ("owner", "analyst")
WITHDRAW_MAX = 10_000
CLAIM_MAX = 10_000
DAY = 86_400


@dataclass(frozen=True)
class Minted:
    coins: list[bytes]
    expires: int
    kid: bytes


_refused = spending.refused


class Ledger:
    def __init__(
        self,
        store: Store,
        vault: Vault,
        opener: Opener,
        expiry_days: int = 730,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.vault = vault
        self.opener = opener
        self.expiry = expiry_days * DAY
        self.clock = clock
        self._system: dict[str, int] = {}
        self._analysts: dict[str, Account] = {}  # only id, name and services are used from it
        self.books = Books(store, self.now)  # policies and statements

    def now(self) -> int:
        return int(self.clock())

    def _sys(self, tx: Tx, name: str) -> int:
        if name not in self._system:
            account = tx.account(name)
            if account is None:
                raise errors.BankError(f"system account {name} is missing; run `ecoin-bank init`")
            self._system[name] = account.id
        return self._system[name]

    @staticmethod
    def _account(tx: Tx, name: str, kind: str | None = None) -> Account:
        account = tx.account(name)
        if account is None or account.kind == "system" or (kind and account.kind != kind):
            raise errors.UnknownAccount(f"no {kind} account {name}" if kind else f"no account {name}")
        return account

    # Accounts (admin).

    def create_account(self, name: str, kind: str, services: Sequence[str] = ()) -> Account:
        if not names.is_id(name):
            raise errors.Malformed("account id must be 1 to 32 characters of A-Z a-z 0-9 . _ -")
        if kind not in KINDS:
            raise errors.Malformed("kind must be owner or analyst")
        if kind == "owner" and services:
            raise errors.Malformed("only analyst accounts offer services")
        try:
            services = sorted({wire.service_name(s).decode() for s in services})
        except (TypeError, ValueError) as exc:
            raise errors.Malformed(str(exc)) from exc

        def create(tx: Tx) -> Account:
            now = self.now()
            try:
                tx.account_add(name, kind, services, now)
            except Conflict as exc:
                raise errors.Exists(f"account {name} exists") from exc
            tx.audit("account", {"id": name, "kind": kind, "services": services}, now)
            return self._account(tx, name)

        return self.store.run(create)

    def fund(self, name: str, amount: int, request_id: str | None = None) -> Account:
        """Credits an owner from the treasury; with a request id, a repeat changes nothing."""
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**53:
            raise errors.Malformed("amount must be a positive integer")
        ref = f"fund:{request_id}" if request_id else None

        def fund(tx: Tx) -> Account:
            now = self.now()
            account = self._account(tx, name, "owner")
            if ref and (done := tx.transfer_ref(ref)):
                if done[1:] != (account.id, amount):
                    raise errors.Exists("request_id was used for another funding")
                return account
            tx.transfer(self._sys(tx, TREASURY), account.id, amount, "fund", now, ref)
            tx.audit("fund", {"id": name, "amount": amount}, now)
            return tx.account_by_id(account.id)

        try:
            return self.store.run(fund)
        except Conflict:  # the same request id, committed by a racing twin: now a repeat
            return self.store.run(fund)

    def accounts(self) -> list[Account]:
        return [a for a in self.store.run(lambda tx: tx.accounts(), write=False) if a.kind != "system"]

    def services(self) -> list[str]:
        """Every service some analyst account offers, sorted."""
        return sorted({s for a in self.accounts() if a.kind == "analyst" for s in a.services})

    def balance(self, name: str) -> Account:
        return self.store.run(lambda tx: self._account(tx, name), write=False)

    # Devices (owner).

    def register_device(self, owner: str, device_id: str, device_key: bytes) -> None:
        try:
            device_id = wire.device_id(device_id).decode()
        except (TypeError, ValueError) as exc:
            raise errors.Malformed(str(exc)) from exc
        if len(device_key) != 32:
            raise errors.Malformed("device_key must be 32 bytes")
        sealed = self.vault.seal_device_key(device_id, device_key)

        def register(tx: Tx) -> None:
            now = self.now()
            account = self._account(tx, owner, "owner")
            try:
                tx.device_add(device_id, account.id, sealed, now)
            except Conflict as exc:
                raise errors.Exists(f"device {device_id} exists") from exc
            tx.audit("device", {"device": device_id, "owner": owner}, now)

        self.store.run(register)

    def _device(self, tx: Tx, owner: Account, device_id: str) -> None:
        device = tx.device(device_id)
        if device is None or device.owner != owner.id:  # another owner's device is "unknown"
            raise errors.UnknownDevice(f"no device {device_id} of {owner.name}")

    # Minting: withdrawals and top-ups.

    def _mint(
        self, tx: Tx, owner: Account, device: str, count: int, request: str, op_id: bytes | None
    ) -> Minted:
        """Mints ``count`` coins for ``request`` once; a repeat gets the same coins back."""
        now = self.now()
        kid = self.opener.keys.current
        batch = Batch(
            0, request, owner.id, device, kid, crypto.random(16), op_id, count, now, now + self.expiry
        )
        batch_id = tx.batch_add(batch)
        if batch_id is None:
            old = tx.batch(request)
            if old is None or (old.device, old.count, old.op_id) != (device, count, op_id):
                raise errors.Exists("this request id was used for another withdrawal")
            return Minted(self.vault.coins(old.nonce, old.count), old.expires, old.kid)
        if owner.balance < count:  # early exit only; the conditional debit below decides
            raise errors.InsufficientFunds(f"{owner.name} has {owner.balance}, needs {count}")
        coins = self.vault.coins(batch.nonce, count)
        tx.coins_add(batch_id, [coin_hash(c) for c in coins])
        if not tx.transfer(owner.id, self._sys(tx, COINS), count, "withdraw", now):
            raise errors.InsufficientFunds(f"{owner.name} cannot pay for {count} coins")
        body = {
            "batch": batch_id,
            "owner": owner.name,
            "device": device,
            "count": count,
            "expires": batch.expires,
        }
        tx.audit("mint", body, now)
        return Minted(coins, batch.expires, kid)

    def withdraw(self, owner: str, device_id: str, count: int, request_id: str) -> Minted:
        """Idempotent per (owner, request_id). No upper bound here: the router enforces the
        API's; the bench mints a million coins through this same path."""
        if not isinstance(count, int) or count < 1:
            raise errors.Malformed("count must be a positive integer")

        def withdraw(tx: Tx) -> Minted:
            account = self._account(tx, owner, "owner")
            self._device(tx, account, device_id)
            return self._mint(tx, account, device_id, count, f"w:{account.id}:{request_id}", None)

        return self.store.run(withdraw)

    def topup(self, frame: bytes) -> bytes:
        """A device's TOPUP_REQUEST (relayed by a gateway) -> its sealed TOPUP_RESPONSE."""
        try:
            op_id, device_b, counter, count, _tag = wire.decode_topup_request(frame)
            device_id = device_b.decode() if isinstance(device_b, bytes) else str(device_b)
        except (TypeError, ValueError) as exc:
            raise errors.Malformed(f"bad TOPUP_REQUEST: {exc}") from exc
        device = self.store.run(lambda tx: tx.device(device_id), write=False)
        if device is None:
            raise errors.UnknownDevice(f"no device {device_id}")
        try:
            device_key = self.vault.open_device_key(device_id, device.key_enc)
            session.check_topup_request(crypto, device_key, frame)
        except session.InvalidTag as exc:
            raise errors.Malformed("the top-up request does not authenticate") from exc
        except VaultError as exc:
            raise errors.BankError(str(exc)) from exc

        def topup(tx: Tx) -> Minted:
            request = f"t:{device_id}:{counter}"
            if not tx.device_advance(device_id, counter):
                old = tx.batch(request)
                if old is None or old.op_id != op_id:  # only the very same request is answered again
                    raise errors.ReplayedCounter(f"counter {counter} of {device_id} is not above the last")
            owner = tx.account_by_id(device.owner)
            return self._mint(tx, owner, device_id, count, request, op_id)

        minted = self.store.run(topup)
        coins = b"".join(minted.coins)
        return bytes(session.seal_topup_response(crypto, device_key, op_id, counter, minted.expires, coins))

    # Redemption (analyst).

    def redeem(self, analyst: str, items: list[Item]) -> list[dict[str, Any]]:
        """One result per item, in order. Every check (key, header, service, the operation's
        tag, the analyst's ``not_after``, the price, the owner's policy) comes before the
        spend, and a refused coin stays unspent. A header pays exactly the analyst's price:
        the first ``price`` of its coins are spent all together or not at all (``spend``),
        and any others stay outstanding for the owner's claim. A spend is bound to the
        operation's digest: the same analyst retrying
        the same operation gets the same keys again; anything else for a spent coin is
        "already spent"."""
        account = self._analysts.get(analyst)
        if account is None:  # an analyst's id and services never change: looked up once
            account = self.store.run(lambda tx: self._account(tx, analyst, "analyst"), write=False)
            self._analysts[analyst] = account
        opened = self.opener.open(items)
        results: list[dict[str, Any] | None] = [None] * len(items)
        todo: list[tuple[int, Opened]] = []
        repeats: list[tuple[int, Opened]] = []
        now = self.clock()  # after the opening, which is where a busy bank makes items wait
        for i, o in enumerate(opened):
            if isinstance(o, Refused):
                results[i] = _refused(o.code, o.message)
            elif items[i].repeat or (o.not_after is not None and now > o.not_after):
                # Spends nothing, so neither a deadline nor a policy applies; past its deadline
                # an item is still answered its keys if it had been paid (a retry, late).
                repeats.append((i, o._replace(hashes=o.hashes[: items[i].price])))
            elif o.service not in account.services:
                results[i] = _refused("not_authorised", f"{analyst} does not offer {o.service}")
            elif len(o.hashes) < items[i].price:  # the device agreed to less: nothing is spent
                paid = f"the header pays {len(o.hashes)} coins, the price is {items[i].price}"
                results[i] = _refused("price_not_covered", paid)
            elif len(o.hashes) == items[i].price:  # the usual case: no copy of the item
                todo.append((i, o))
            else:  # more coins than the price (a gateway told the device more): the first price
                todo.append((i, o._replace(hashes=o.hashes[: items[i].price])))
        if todo:
            for i, result in self.store.run(lambda tx: self._spend(tx, account, todo)).items():
                results[i] = result
        if repeats:
            again = self.store.run(lambda tx: spending.repeats(tx, account, repeats), write=False)
            for i, result in again.items():
                if result["status"] != "ok" and not items[i].repeat:
                    result = _refused("deadline_passed", "the analyst's device no longer waits: not spent")
                results[i] = result
        return [r for r in results if r is not None]

    def _spend(self, tx: Tx, analyst: Account, todo: list[tuple[int, Opened]]) -> dict[int, dict[str, Any]]:
        now = self.now()
        todo, out, owners = self._police(tx, analyst, todo, now)
        if todo:
            out.update(spending.spend(tx, analyst, todo, now, self._sys(tx, COINS), owners))
        return out

    def _police(
        self, tx: Tx, analyst: Account, todo: list[tuple[int, Opened]], now: int
    ) -> tuple[list[tuple[int, Opened]], dict[int, dict[str, Any]], dict[bytes, tuple[int, str]]]:
        """THE policy check, before the spend: (items that may go on, refusals by index,
        {coin hash: (owner, device)} of the outstanding coins). Only an outstanding coin is
        checked (anything else is refused or answered again below, whatever the policy);
        the policy decisions themselves are ``policy.Police``'s."""
        live = tx.outstanding_owners(list(dict.fromkeys(h for _, o in todo for h in o.hashes)))
        policies = usage.applying(tx, live.values())
        if not policies:
            return todo, {}, live
        capped = [d for d, p in policies.items() if p.capped]
        police = policy.Police(policies, usage.spent(tx, capped, now), now)
        keep, refused, passed = [], {}, set()
        for i, o in todo:
            fresh = [h for h in o.hashes if h in live and h not in passed]
            if fresh:  # the coins this item pays, checked against their device's policy
                code = police.check(live[fresh[0]][1], analyst.name, o.service, len(fresh))
                if code is not None:
                    refused[i] = _refused(code, policy.MESSAGES[code])
                    continue
                passed.update(fresh)
            keep.append((i, o))
        return keep, refused, live

    # Claims (owner): refunds of coins a device reports failed or in doubt.

    def claim(
        self, owner: str, device_id: str, coins: list[bytes], refund: bool = True
    ) -> list[dict[str, Any]]:
        if not coins or len(coins) > CLAIM_MAX:
            raise errors.BatchTooLarge(f"claim 1 to {CLAIM_MAX} coins at a time")
        hashes = [coin_hash(c) for c in coins]

        def claim(tx: Tx) -> list[dict[str, Any]]:
            now = self.now()
            account = self._account(tx, owner, "owner")
            self._device(tx, account, device_id)
            unique = list(dict.fromkeys(hashes))
            done = tx.refund(unique, account.id, device_id) if refund else set()
            if done:
                tx.transfer(self._sys(tx, COINS), account.id, len(done), "refund", now)
                tx.audit(
                    "refund",
                    {"owner": owner, "device": device_id, "coins": sorted(h.hex() for h in done)},
                    now,
                )
            others = [h for h in unique if h not in done]
            states = tx.coin_states(others) if others else {}
            mine = [h for h, s in states.items() if s.owner == account.id and s.device == device_id]
            spends = tx.spends(mine) if mine else {}
            where = (account.id, device_id, now)
            return [self._claimed(h, h in done, states.get(h), spends.get(h), where) for h in hashes]

        return self.store.run(claim)

    @staticmethod
    def _claimed(
        h: bytes, refunded: bool, state: CoinState | None, spend: Spend | None, where: tuple[int, str, int]
    ) -> dict[str, Any]:
        owner, device, now = where
        out: dict[str, Any] = {"coin_hash": h.hex()}
        if refunded:
            return {**out, "state": "refunded"}
        if state is None or state.owner != owner or state.device != device:
            return {**out, "state": "unknown"}  # never tell one owner about another's coins
        if spend is not None:
            return {**out, "state": "redeemed", "by": spend.analyst, "at": spend.at}
        if state.state == REFUNDED:
            return {**out, "state": "already_refunded"}
        return {**out, "state": "outstanding" if state.expires > now else "expired"}

    # Expiry.

    def expire(self) -> int:
        """Refunds every expired, unspent coin to its owner and purges expired batches."""

        def expire(tx: Tx) -> int:
            now = self.now()
            total = 0
            batches = tx.expire(now)
            for batch, owner, n in batches:
                if n:
                    tx.transfer(self._sys(tx, COINS), owner, n, "expire", now, f"expire:{batch}")
                    total += n
            if batches:
                tx.audit("expire", {"batches": [b for b, _, _ in batches], "coins": total}, now)
            return total

        return self.store.run(expire)

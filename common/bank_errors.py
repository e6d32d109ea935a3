"""The bank's errors: one stable code each, mapped to an HTTP status in ONE place (``STATUS``).

    BankError                  code            status
    ├── Malformed              malformed       400   bad JSON, wrong types, bad base64 or lengths
    ├── BatchTooLarge          batch_too_large 400
    ├── Unauthenticated        unauthenticated 401   (client side only: the handshake was refused)
    ├── Forbidden              forbidden       403   wrong role for this call
    ├── UnknownAccount         unknown_account 404
    ├── UnknownDevice          unknown_device  404
    ├── NotFound               not_found       404   no such path
    ├── InsufficientFunds      insufficient_funds 409
    ├── ReplayedCounter        replayed_counter   409
    ├── Exists                 exists          409
    ├── AlreadyClaimed         already_claimed 409   a claim secret used before
    ├── TooSlow                too_slow        408   the body did not arrive in time
    ├── TooLarge               too_large       413   body over 1 MiB
    └── Unavailable            unavailable     503   database down: nothing was changed

The server raises them and turns them into ``{"error": {"code", "message"}}``; the client
(``ecoin.common.bank_client``) turns such an answer back into the same class, so both sides share
this tree. Redemption refusals are per item results, not errors (see ``REFUSALS``).
"""

from __future__ import annotations


class BankError(Exception):
    code = "internal"
    status = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class Malformed(BankError):
    code, status = "malformed", 400


class BatchTooLarge(BankError):
    code, status = "batch_too_large", 400


class Unauthenticated(BankError):
    code, status = "unauthenticated", 401


class Forbidden(BankError):
    code, status = "forbidden", 403


class UnknownAccount(BankError):
    code, status = "unknown_account", 404


class UnknownDevice(BankError):
    code, status = "unknown_device", 404


class NotFound(BankError):
    code, status = "not_found", 404


class InsufficientFunds(BankError):
    code, status = "insufficient_funds", 409


class ReplayedCounter(BankError):
    code, status = "replayed_counter", 409


class Exists(BankError):
    code, status = "exists", 409


class AlreadyClaimed(BankError):
    code, status = "already_claimed", 409


class TooSlow(BankError):
    code, status = "too_slow", 408


class TooLarge(BankError):
    code, status = "too_large", 413


class Unavailable(BankError):
    code, status = "unavailable", 503


CLASSES: dict[str, type[BankError]] = {
    cls.code: cls
    for cls in (
        Malformed,
        BatchTooLarge,
        Unauthenticated,
        Forbidden,
        UnknownAccount,
        UnknownDevice,
        NotFound,
        InsufficientFunds,
        ReplayedCounter,
        Exists,
        AlreadyClaimed,
        TooSlow,
        TooLarge,
        Unavailable,
    )
}
STATUS: dict[str, int] = {code: cls.status for code, cls in CLASSES.items()}

# Per-item redemption refusals (docs/BANK_API.md): a refused coin stays unspent.
REFUSALS = (
    "malformed",
    "unknown_key",
    "bad_tag",
    "unknown_coin",
    "already_spent",
    "expired",
    "not_authorised",
    "deadline_passed",  # past the item's not_after: the analyst's device no longer waits
    "price_not_covered",  # the header holds fewer coins than the analyst's price (nothing spent)
    # The owner's policy (bank/policy.py) forbids the payment: the analyst learns which rule;
    # the device only gets the generic error.
    "policy_window",
    "policy_analyst",
    "policy_service",
    "policy_daily_cap",
    "policy_monthly_cap",
)


def from_answer(status: int, code: str, message: str) -> BankError:
    """Client side: the exception for an error answer (unknown codes keep their status)."""
    cls = CLASSES.get(code)
    if cls is None:
        err = BankError(f"{code}: {message}")
        err.status = status
        err.code = code
        return err
    return cls(message)

"""Errors a person reads: each carries the sentence shown to them, never internals or secrets.

Handlers raise these; the dispatcher renders them as an ephemeral reply. Anything else that escapes a
handler is a bug: it is logged with a reference and the user gets a generic apology with that reference.
"""

from __future__ import annotations


class UserError(Exception):
    """A refusal the user can act on. ``message`` is shown verbatim (ephemerally where possible)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(UserError):
    """The command's arguments are wrong (unknown option, out of range, empty prompt...)."""


class NotFound(UserError):
    """The thing named does not exist, or is not the caller's to see (deliberately the same answer)."""


class NotAllowed(UserError):
    """The caller may not run this here (wrong place, not an admin, banned)."""


class LimitReached(UserError):
    """A rate or concurrency limit refuses the request for now."""


class InsufficientCredits(UserError):
    """The balance does not cover the cost.

    Args:
        needed: Credits the request costs.
        available: Credits the user has now.
        owed: Credits the user owes after a refund or dispute (repaid from their next credits).
    """

    def __init__(self, needed: int, available: int, owed: int = 0) -> None:
        message = f"This needs {needed} credit{'s' if needed != 1 else ''} and you have {available}."
        if owed:
            message += (
                f" You owe {owed} credit{'s' if owed != 1 else ''} taken back after a refund; "
                "they are repaid from the next credits you get."
            )
        super().__init__(message + " Lower the image count, or get more credits with /buy.")
        self.needed = needed
        self.available = available
        self.owed = owed

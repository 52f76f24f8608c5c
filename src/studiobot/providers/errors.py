"""The provider error taxonomy (DESIGN.md section 6).

Every adapter maps what its vendor answers onto exactly one of these classes, so the scheduler can
decide what to do (retry, fail over, refund, mark a key invalid) without knowing the vendor.

Each error carries ``user_message``: a sentence a person can act on. It must never contain a key,
a raw vendor body or a stack trace; ``detail`` may hold a short, already-redacted vendor reason for
logs and job events.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class for every failure a provider adapter reports.

    Attributes:
        user_message: What the person who ran the command reads.
        detail: Short redacted reason for logs and job events (no secrets).
        retryable: Whether the scheduler may try the same request again later.
    """

    retryable = False
    default_message = "The image provider failed."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or self.default_message)
        self.detail = detail
        self.user_message = user_message or self.default_message


class AuthError(ProviderError):
    """The key was refused (HTTP 401/403 for authentication): tell the user, mark the key invalid."""

    default_message = "The provider refused the API key. Check or replace it with /keys."


class ContentRejected(ProviderError):
    """The provider's safety system refused the prompt or the output: no retry, refund."""

    default_message = (
        "The provider's content filter rejected this prompt. Try rewording it; you were not charged."
    )


class BadRequest(ProviderError):
    """The provider rejected the options (our bug or an unsupported combination): no retry."""

    default_message = "The provider could not accept these options; you were not charged."


class TaskFailed(ProviderError):
    """The provider accepted the task but it ended without images (failed, cancelled, expired).

    Terminal: asking again cannot change the outcome (e.g. Replicate ``failed``/``aborted``, or
    outputs already deleted). No retry, refund.
    """

    default_message = "The provider could not make this image; you were not charged."


class QuotaExhausted(ProviderError):
    """The account behind the key has no credit or quota left (e.g. OpenAI ``insufficient_quota``)."""

    default_message = "The provider account has run out of quota; you were not charged."


class RateLimited(ProviderError):
    """Too many requests: retry after ``retry_after`` seconds (from ``Retry-After`` when given).

    Args:
        retry_after: Seconds to wait before the next attempt, or None when the provider gave no hint.
    """

    retryable = True
    default_message = "The provider is busy right now; we will retry shortly."

    def __init__(
        self, detail: str = "", *, retry_after: float | None = None, user_message: str | None = None
    ) -> None:
        super().__init__(detail, user_message=user_message)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    """5xx answers, timeouts, connection errors or a response we cannot read: retry with backoff."""

    retryable = True
    default_message = "The image provider is unavailable right now; you were not charged."


class WebhookRejected(Exception):
    """A webhook delivery we do not trust or cannot read; the web layer answers 4xx and does nothing.

    Not a ProviderError: it says nothing about the task, only about the delivery.
    """

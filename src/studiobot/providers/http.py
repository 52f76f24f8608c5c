"""The one HTTP policy every provider adapter shares: client settings, retries, redaction.

Adapters build their client with :func:`make_client`, send every request through :func:`send` and
pass every vendor body through :func:`redact` before it reaches an error's ``detail``. Keeping this
in one place means timeouts, retry limits and secret hygiene cannot drift between vendors.
"""

from __future__ import annotations

import math
import re
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)

from studiobot import __version__
from studiobot.providers.base import ProviderKey
from studiobot.providers.errors import AuthError, Unavailable

#: Attempts (first try included) for idempotent requests; small so a dead vendor fails fast.
RETRY_ATTEMPTS = 3
#: Backoff base and cap in seconds; the wait before retry k is uniform in [0, min(cap, base*2**k)].
RETRY_BASE_SECONDS = 0.2
RETRY_CAP_SECONDS = 2.0

#: Longest redacted text kept in an error's ``detail``.
REDACTED_MAX_CHARS = 300

# Shapes of bearer tokens vendors echo back in error bodies. OpenAI and Stability keys start with "sk-"
# (OpenAI masks them as "sk-abc***xyz", which still leaks a prefix and suffix), Replicate tokens
# with "r8_", Hugging Face tokens with "hf_". The "Bearer" rule catches any other scheme echoed with its header.
_TOKEN_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_*\-]{4,}"),
    re.compile(r"\br8_[A-Za-z0-9_*\-]{4,}"),
    re.compile(r"\bhf_[A-Za-z0-9_*\-]{4,}"),
    re.compile(r"\b(Bearer)\s+[^\s\"',;]+", re.IGNORECASE),
)


def make_client(
    base_url: str, *, timeout: float = 60.0, connect_timeout: float = 10.0
) -> httpx.AsyncClient:
    """Build the ``httpx.AsyncClient`` an adapter keeps for its whole life.

    Args:
        base_url: Vendor API root, e.g. ``https://api.example/v1``; request paths are relative
            to it.
        timeout: Seconds allowed for each read, write and pool wait.
        connect_timeout: Seconds allowed to open the TCP/TLS connection.

    Returns:
        A client with explicit timeouts, a ``User-Agent: studiobot/<version>`` header and redirects
        not followed (a redirected API call would resend the Authorization header elsewhere).
    """
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        headers={"User-Agent": f"studiobot/{__version__}"},
        follow_redirects=False,
    )


async def send(
    client: httpx.AsyncClient, method: str, url: str, *, retry_idempotent: bool, **kwargs: Any
) -> httpx.Response:
    """Send one request, mapping network failures to :class:`Unavailable`.

    Any HTTP status comes back as a response for the adapter to map; only transport problems
    raise here.

    Args:
        client: The adapter's client (see :func:`make_client`).
        method: HTTP method, e.g. ``"GET"``.
        url: Path relative to the client's base URL, or an absolute URL.
        retry_idempotent: True for requests that are safe to repeat (polls, key checks, cancels).
            They are retried on transport errors and 5xx answers, up to :data:`RETRY_ATTEMPTS`
            attempts with full-jitter exponential backoff. False for POSTs that start paid work:
            repeating them could bill the user twice, so the scheduler decides about those.
        **kwargs: Passed to ``httpx.AsyncClient.request`` (``json``, ``headers``...).

    Returns:
        The response; after exhausted retries, the last 5xx response.

    Raises:
        Unavailable: Timeout, connection error or unreadable response (after retries when
            ``retry_idempotent``). Its ``detail`` names the method, path and error class only.
    """
    if not retry_idempotent:
        return await _send_once(client, method, url, **kwargs)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(RETRY_ATTEMPTS),
        wait=wait_random_exponential(multiplier=RETRY_BASE_SECONDS, max=RETRY_CAP_SECONDS),
        retry=retry_if_exception_type(Unavailable) | retry_if_result(_is_server_error),
        retry_error_callback=_last_outcome,
    )
    return await retrying(_send_once, client, method, url, **kwargs)


async def _send_once(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise Unavailable(f"{method} {_path(url)}: timed out ({type(exc).__name__})") from None
    except (httpx.TransportError, httpx.DecodingError) as exc:
        # ``from None``: the chained httpx exception carries the request, headers included.
        raise Unavailable(f"{method} {_path(url)}: {type(exc).__name__}") from None


def _path(url: str) -> str:
    # Only the path goes into details: a query string could carry a token.
    return httpx.URL(url).path or "/"


def _is_server_error(response: httpx.Response) -> bool:
    return response.status_code >= 500


def _last_outcome(state: RetryCallState) -> httpx.Response:
    # Re-raises the last Unavailable, or hands back the last 5xx so the adapter maps its body.
    assert state.outcome is not None
    return state.outcome.result()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Read ``Retry-After`` (RFC 9110 §10.2.3) as seconds to wait.

    Args:
        response: Any response, usually a 429 or 503.

    Returns:
        Seconds (>= 0) from either form, delta-seconds (``"30"``) or HTTP-date
        (``"Wed, 21 Oct 2026 07:28:00 GMT"``); None when the header is absent or unreadable.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT by definition
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def redact(text: str, *secrets: str) -> str:
    """Make vendor text safe for an error's ``detail``: no secrets, bounded length.

    Args:
        text: Raw vendor text (an error body, a failure reason).
        *secrets: Exact strings to remove (the API key in use); empty strings are ignored.

    Returns:
        ``text`` with each secret and anything shaped like a bearer token (``sk-...``, ``r8_...``,
        ``Bearer xxx``) replaced by ``***``, then cut to :data:`REDACTED_MAX_CHARS` characters.
        Redaction happens before the cut so a truncated secret cannot survive.
    """
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)} ***" if m.lastindex else "***", text)
    return text[:REDACTED_MAX_CHARS]


def parse_json(response: httpx.Response) -> Any:
    """Decode a response body as JSON.

    Args:
        response: A response whose body should be JSON.

    Returns:
        The decoded value (any JSON type; callers check the shape).

    Raises:
        Unavailable: The body is not valid JSON (a truncated or proxy-mangled answer is treated
            like an outage: retryable, nothing was delivered).
    """
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise Unavailable(
            f"{_describe(response)} answered with malformed JSON (HTTP {response.status_code})"
        ) from None


def _describe(response: httpx.Response) -> str:
    try:
        request = response.request
    except RuntimeError:  # a response built by hand has no request
        return "the provider"
    return f"{request.method} {request.url.path}"


def require_secret(key: ProviderKey | None, vendor: str) -> str:
    """The secret of ``key``, or AuthError naming ``vendor`` when no key was given.

    Raises:
        AuthError: ``key`` is None or empty.
    """
    if key is None or not key.secret:
        raise AuthError(f"no {vendor} key", user_message=f"No {vendor} API key is configured.")
    return key.secret


def bearer(secret: str) -> dict[str, str]:
    """``Authorization: Bearer <secret>`` as a header dict."""
    return {"Authorization": f"Bearer {secret}"}

"""Bounded downloads of provider result URLs.

Providers that answer with a URL expect it to be fetched promptly. :func:`fetch_bytes` streams the
body with a size cap and an overall deadline, and reports every failure as a
:class:`DownloadError` whose message is safe to show: signed URLs carry tokens in their query
string, so messages only ever name ``scheme://host/path``.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import httpx

__all__ = ["DownloadError", "fetch_bytes"]

_SHOWN_URL_CHARS = 80


class DownloadError(Exception):
    """A download failed. ``str(error)`` is safe to show to the user.

    Attributes:
        retryable: Whether trying again later may succeed (server errors, timeouts, network).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


async def fetch_bytes(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float
) -> bytes:
    """Download ``url`` into memory, refusing bodies over ``max_bytes``.

    Redirects are followed (within the client's redirect limit). Compressed transfer is declined
    (``Accept-Encoding: identity``) so the size cap bounds what is actually read.

    Args:
        client: The shared HTTP client; its own timeouts still apply per operation.
        url: An ``http`` or ``https`` URL.
        max_bytes: Largest accepted body, in bytes.
        timeout: Deadline for the whole download (connect, headers and body), in seconds.

    Returns:
        The response body.

    Raises:
        DownloadError: Not an http(s) URL, a non-2xx answer, a body over ``max_bytes``, a
            timeout, or a network or protocol failure. ``retryable`` is True for 408, 429, 5xx,
            timeouts and network errors; False otherwise (404 and 410 in particular).
    """
    shown = _safe_url(url)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise DownloadError(f"Refused to download {shown}: not an http(s) URL.", retryable=False)
    try:
        async with asyncio.timeout(timeout):
            return await _stream(client, url, shown, max_bytes)
    except TimeoutError:
        raise DownloadError(
            f"Downloading {shown} took longer than {timeout:g} s.", retryable=True
        ) from None
    except httpx.TimeoutException:
        raise DownloadError(f"Downloading {shown} timed out.", retryable=True) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        raise DownloadError(
            f"Downloading {shown} failed: {type(exc).__name__}.", retryable=True
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # Bad redirects, undecodable bodies, malformed URLs: the same request will fail again.
        raise DownloadError(
            f"Downloading {shown} failed: {type(exc).__name__}.", retryable=False
        ) from None


async def _stream(client: httpx.AsyncClient, url: str, shown: str, max_bytes: int) -> bytes:
    headers = {"Accept-Encoding": "identity"}
    async with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
        status = response.status_code
        if not 200 <= status < 300:
            raise DownloadError(
                f"Downloading {shown} failed: HTTP {status}.",
                retryable=status >= 500 or status in (408, 429),
            )
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise DownloadError(_too_large(shown, max_bytes), retryable=False)
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > max_bytes:
                # Leaving the block closes the response, so the rest is never read.
                raise DownloadError(_too_large(shown, max_bytes), retryable=False)
            chunks.append(chunk)
        return b"".join(chunks)


def _too_large(shown: str, max_bytes: int) -> str:
    return f"The file at {shown} is larger than the {max_bytes / 2**20:.1f} MiB limit."


def _safe_url(url: str) -> str:
    """``scheme://host[:port]/path``, truncated: no user info, query string or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    shown = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path
    if len(shown) > _SHOWN_URL_CHARS:
        shown = shown[: _SHOWN_URL_CHARS - 3] + "..."
    return shown

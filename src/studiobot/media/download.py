"""Bounded, SSRF-safe downloads of provider result URLs.

Providers that answer with a URL expect it to be fetched promptly. :func:`fetch_bytes` streams the
body with a size cap and an overall deadline, following at most three redirects itself.

Result URLs come from outside: a provider's answer, or a webhook signed with a key the user
brought (anyone with their own Replicate or KIE account can sign a delivery naming any URL). So
the client from :func:`safe_client` connects only to public addresses: on every new connection
(the first request and each redirect) it resolves the host, refuses the lot if ANY address is
loopback, private, link-local, multicast, reserved or otherwise not globally routable, and then
connects to an address it checked, never to a second resolution of the name (DNS rebinding).
Operators can open named networks with ``STUDIOBOT_DOWNLOAD_ALLOW_NETWORKS`` for self-hosted
providers.

Every failure is a :class:`DownloadError` whose message names no host, address or status code;
those go to the log (INFO) with ``scheme://host/path`` only, since signed URLs carry tokens in
their query string.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import typing
import urllib.parse
from collections.abc import Iterable

import httpcore
import httpx

__all__ = ["DownloadError", "fetch_bytes", "is_permitted", "safe_client"]

log = logging.getLogger(__name__)

_SHOWN_URL_CHARS = 80
_MAX_REDIRECTS = 3

# The user reads these after "The finished image could not be fetched: " (scheduler.finisher).
_REFUSED = "its address is not allowed."
_NOT_SENT = "the server holding it did not send it."

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6052 well-known NAT64 prefix: a NAT64 gateway turns these into the IPv4 address they end with,
# which may be a private one (and Python calls the whole prefix reserved, public ones included).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class DownloadError(Exception):
    """A download failed. ``str(error)`` is safe to show to the user.

    The message is a lower-case clause meant to follow "The finished image could not be
    fetched: "; it never names the host, an address or an HTTP status.

    Attributes:
        retryable: Whether trying again later may succeed (server errors, timeouts, network).
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Refused(Exception):
    """A URL or address downloads may not reach, found before any connection to it.

    ``str()`` is for the log only. Not an httpcore or httpx exception, so both let it through
    unchanged.
    """


def is_permitted(address: IPAddress, allow: Iterable[IPNetwork] = ()) -> bool:
    """Whether downloads may connect to ``address``.

    An address is permitted when it is in one of ``allow``, or when it is globally routable:
    ``is_global`` and none of loopback, private, link-local, multicast, reserved, unspecified
    (Python's ``is_global`` alone lets multicast through). An IPv4-mapped (``::ffff:127.0.0.1``)
    or NAT64 (``64:ff9b::/96``, RFC 6052) IPv6 address is judged as the IPv4 address it reaches;
    a 6to4 address (``2002::/16``) must pass both as itself and as the IPv4 address it embeds.

    Args:
        address: A resolved address.
        allow: Networks the operator opened (``Settings.download_allow_networks``).
    """
    networks = tuple(allow)
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            candidates = [address.ipv4_mapped]
        elif address in _NAT64:
            candidates = [ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)]
        elif address.sixtofour is not None:
            candidates.append(address.sixtofour)
    return all(_permitted_alone(candidate, networks) for candidate in candidates)


def _permitted_alone(address: IPAddress, allow: tuple[IPNetwork, ...]) -> bool:
    if any(address.version == network.version and address in network for network in allow):
        return True
    return address.is_global and not (
        address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that connects only to addresses it resolved and checked.

    httpcore asks for ``connect_tcp(host, port)`` with the URL's host name and later starts TLS
    with that same name (SNI, certificate check), and the Host header is the request's; so
    resolving here and connecting to the checked IP changes nothing but where the socket goes.
    """

    def __init__(self, allow: tuple[IPNetwork, ...]) -> None:
        self._allow = allow
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout)
        for address in addresses:
            if not is_permitted(address, self._allow):
                raise _Refused(f"{host} resolves to {address}, which is not a public address")
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # _resolve never returns an empty list
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _Refused(f"the Unix socket {path}")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """Every address ``host`` resolves to (IP literals resolve to themselves), in resolver order."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"resolving {host} failed: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no address")
    return addresses


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over :class:`_CheckedBackend`.

    httpx 0.28 has no option for a network backend (encode/httpx#3749 proposes one), so the pool
    it builds is replaced by the same httpcore pool, with httpx's default limits and TLS context,
    plus ours.
    """

    def __init__(self, allow: tuple[IPNetwork, ...]) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
            network_backend=_CheckedBackend(allow),
        )


def safe_client(*, allow: Iterable[str] = (), timeout: float) -> httpx.AsyncClient:
    """An HTTP client for result downloads that connects to public addresses only.

    Proxies from the environment are ignored (a proxy would connect on our behalf, unchecked) and
    redirects are not followed by the client: :func:`fetch_bytes` follows them itself, each new
    connection checked again.

    Args:
        allow: CIDRs downloads may reach although not public, e.g. ``("10.0.0.0/8",)`` for a
            self-hosted provider (``Settings.download_allow_networks``).
        timeout: httpx's per-operation timeout (connect, read, write, pool), in seconds.

    Returns:
        A client the caller closes with ``aclose()``.

    Raises:
        ValueError: An entry of ``allow`` is not a network.
    """
    networks = tuple(ipaddress.ip_network(network, strict=False) for network in allow)
    return httpx.AsyncClient(
        transport=_CheckedTransport(networks), timeout=timeout, follow_redirects=False,
        trust_env=False,
    )


async def fetch_bytes(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float
) -> bytes:
    """Download ``url`` into memory, refusing bodies over ``max_bytes``.

    Up to three redirects are followed here, each target checked for its scheme (and, with a
    client from :func:`safe_client`, its addresses) before any connection to it. Compressed
    transfer is declined (``Accept-Encoding: identity``) so the size cap bounds what is read.

    Args:
        client: The client from :func:`safe_client`; its own timeouts still apply per operation.
        url: An ``http`` or ``https`` URL.
        max_bytes: Largest accepted body, in bytes.
        timeout: Deadline for the whole download (redirects, connects, headers and body), in
            seconds.

    Returns:
        The response body.

    Raises:
        DownloadError: Not an http(s) URL, an address that is not allowed, too many redirects,
            a non-2xx answer, a body over ``max_bytes``, a timeout, or a network or protocol
            failure. ``retryable`` is True for 408, 429, 5xx, timeouts and network errors; False
            otherwise (refused addresses, 404 and 410 in particular).
    """
    shown = _safe_url(url)
    try:
        async with asyncio.timeout(timeout):
            return await _follow(client, url, max_bytes)
    except _Refused as exc:
        log.info("download of %s refused: %s", shown, exc)
        raise DownloadError(_REFUSED, retryable=False) from None
    except (TimeoutError, httpx.TimeoutException) as exc:
        log.info("download of %s timed out (%s)", shown, type(exc).__name__)
        raise DownloadError(f"it took longer than {timeout:g} s to arrive.", retryable=True) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
        log.info("download of %s failed: %s", shown, type(exc).__name__)
        raise DownloadError(_NOT_SENT, retryable=True) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # Undecodable bodies, malformed URLs: the same request will fail again.
        log.info("download of %s failed: %s", shown, type(exc).__name__)
        raise DownloadError(_NOT_SENT, retryable=False) from None


async def _follow(client: httpx.AsyncClient, url: str, max_bytes: int) -> bytes:
    headers = {"Accept-Encoding": "identity"}
    for _ in range(_MAX_REDIRECTS + 1):
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise _Refused(f"{_safe_url(url)} is not an http(s) URL")
        async with client.stream("GET", url, headers=headers, follow_redirects=False) as response:
            if response.has_redirect_location:
                url = str(response.url.join(response.headers["Location"]))
                continue
            return await _read(response, max_bytes)
    log.info("download of %s: more than %d redirects", _safe_url(url), _MAX_REDIRECTS)
    raise DownloadError("it was redirected too many times.", retryable=False)


async def _read(response: httpx.Response, max_bytes: int) -> bytes:
    status = response.status_code
    if not 200 <= status < 300:
        log.info("download of %s failed: HTTP %d", _safe_url(str(response.url)), status)
        raise DownloadError(_NOT_SENT, retryable=status >= 500 or status in (408, 429))
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise DownloadError(_too_large(max_bytes), retryable=False)
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            # Leaving the block closes the response, so the rest is never read.
            raise DownloadError(_too_large(max_bytes), retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return f"it is larger than the {max_bytes / 2**20:.1f} MiB limit."


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

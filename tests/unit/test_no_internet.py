"""Tests stay on this machine: any attempt to reach another host fails the test (pytest-socket)."""

from __future__ import annotations

import socket

import httpx
import pytest
from pytest_socket import SocketConnectBlockedError

# pytest-socket also warns about each refused attempt; here the attempts are the point.
pytestmark = pytest.mark.filterwarnings("ignore:A test tried to use socket:UserWarning")


def blocked(error: BaseException) -> bool:
    """Whether pytest-socket's refusal is this error or anywhere in its causes or group."""
    seen: list[BaseException] = [error]
    while seen:
        current = seen.pop()
        if isinstance(current, SocketConnectBlockedError):
            return True
        seen.extend(getattr(current, "exceptions", ()))
        seen.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def test_a_connection_to_another_host_is_refused() -> None:
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("203.0.113.7", 443), timeout=1)  # TEST-NET-3, never routed


async def test_an_http_client_cannot_leave_loopback() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(BaseException) as caught:
            await client.get("http://203.0.113.7/")
    assert blocked(caught.value)

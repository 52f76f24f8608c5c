"""A free TCP port for a server a test starts on a port it must know in advance.

Binding port 0 and closing gives a port from the kernel's ephemeral range, which the kernel hands
out again at once to other sockets (clients' outgoing connections, doubles on port 0): a server
started on it a moment later can meet "address already in use". Ports below that range are only
ever taken by a bind that names them, so one found free there stays free far more reliably.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, below the kernel's ephemeral range.

    Raises:
        RuntimeError: None of 200 tries was free.
    """
    low = _ephemeral_low()
    for port in random.sample(range(max(1024, low - 12_000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default (49152 elsewhere: the range below it is free there too)

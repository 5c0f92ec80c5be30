"""Picking loopback ports for the processes a local federation starts.

A port is picked well before its process binds it, and a SuperNode or SuperLink that is
restarted binds the same ports again. A port from the kernel's ephemeral range can be taken
in between by any outgoing connection (the kernel picks a connection's local port from that
range), and a long-lived one, a node's keep-alive connection to the SuperLink, then blocks
the restarted process for good. Ports are therefore picked below that range, where only an
explicit bind can take them.
"""

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Below the picks: well-known and registered service ports (9090, 9443, ...).
FIRST_PICK = 20000
_picked: set[int] = set()
# Not the `random` module's generator: a seeded one would give two processes the same ports.
_draw = random.SystemRandom()


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default if unknown)."""
    try:
        low, high = (int(value) for value in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def is_free(port: int) -> bool:
    """Whether nothing is bound to `port` on any address."""
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_port(path: Path = EPHEMERAL_RANGE) -> int:
    """A TCP port that nothing is bound to, outside the ephemeral range, not picked before."""
    low, high = ephemeral_range(path)
    if low - FIRST_PICK >= 1000:
        first, last = FIRST_PICK, low - 1
    elif 65535 - high >= 1000:
        first, last = high + 1, 65535
    else:  # no room outside the range: the kernel's pick, as good as it gets
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = _draw.randint(first, last)
        if port not in _picked and is_free(port):
            _picked.add(port)
            return port
    raise OSError(f"no free port between {first} and {last}")

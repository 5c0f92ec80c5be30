"""Container health check: every given local TCP port accepts connections.

`python -m fedllm.telemetry.health 9443 9101` imports only the standard library, so a check
every few seconds costs next to nothing beside a training SuperNode.
"""

import socket
import sys


def unreachable(ports: list[int], host: str = "127.0.0.1", timeout: float = 2.0) -> list[int]:
    """The ports on `host` that refuse or time out a TCP connection."""
    closed = []
    for port in ports:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError:
            closed.append(port)
    return closed


def main(argv: list[str]) -> int:
    """Exit status 0 when every port in `argv` accepts a connection, else 1 with one line."""
    try:
        ports = [int(arg) for arg in argv]
    except ValueError:
        print(f"usage: python -m fedllm.telemetry.health PORT... (got {argv})", file=sys.stderr)
        return 2
    closed = unreachable(ports)
    if closed:
        print(f"unhealthy: nothing listens on port {', '.join(map(str, closed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Ports picked for a federation's processes are free and out of reach of outgoing connections."""

import socket
from pathlib import Path

from fedllm.orchestration.ports import ephemeral_range, free_port, is_free


def port_range(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    return path


def test_picked_ports_lie_below_the_ephemeral_range_and_differ(tmp_path: Path) -> None:
    path = port_range(tmp_path, "32768\t60999\n")
    ports = [free_port(path) for _ in range(200)]
    assert all(20000 <= port < 32768 for port in ports)
    assert len(set(ports)) == len(ports)


def test_above_the_range_when_it_starts_low(tmp_path: Path) -> None:
    path = port_range(tmp_path, "1024 40000")
    assert all(40000 < free_port(path) <= 65535 for _ in range(20))


def test_an_outgoing_connection_does_not_get_a_picked_port() -> None:
    """What the pick is for: a connection's local port comes from the ephemeral range."""
    low, high = ephemeral_range()
    with socket.create_server(("127.0.0.1", free_port())) as server:
        port = server.getsockname()[1]
        assert not low <= port <= high
        with socket.create_connection(("127.0.0.1", port)) as client:
            assert low <= client.getsockname()[1] <= high


def test_a_bound_port_is_not_free() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert not is_free(server.getsockname()[1])


def test_unreadable_range_falls_back_to_linux_defaults(tmp_path: Path) -> None:
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)
    assert ephemeral_range(port_range(tmp_path, "garbage")) == (32768, 60999)

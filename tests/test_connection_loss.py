"""A SuperNode cut off from its SuperLink the way a restarting container's published port does.

While the SuperLink container restarts, Docker's proxy on the published port accepts each
connection and closes it: a SuperNode dialling that port sees its TLS handshake end in an EOF.
Flower 1.42 gives up on any error that mentions SSL/TLS; its Fleet loop then ends, yet the
process lived on outside the federation, and a resumed run waiting for `min-nodes` waited for
it forever (the compose test's hang). Now the node waits for such a SuperLink like for a
refused connection, and when Flower does give up (on something that is not TLS at all), the
node exits so that its supervisor (a restart policy, `fedllm up`) starts one that joins again.
"""

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedllm.identity import pki
from fedllm.orchestration.federation import LocalFederation
from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import flower_env, spawn, stop
from tests.federations import descendants, programs, wait_for, wait_gone
from tests.relay import Relay

pytestmark = pytest.mark.integration

NODE_ID = re.compile(r"SuperNode ID: (\d+)")
EXIT_SECONDS = 60.0  # Flower's retries before it gives up, then its exit (5 s at most)


@contextmanager
def node_behind_relay(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Relay, Path]]:
    """A SuperLink, a relay to its port, a `fedllm supernode` dialling the relay (registered)."""
    state = tmp_path / "state"
    pki.generate(state / "pki", ["node-1"])
    log = state / "logs" / "node-1.log"
    with LocalFederation(state, state / "pki", []) as fed, Relay(("127.0.0.1", fed.port)) as relay:
        command = [
            sys.executable, "-m", "fedllm", "supernode",
            "--certs", str(fed.certs),
            "--name", "node-1",
            "--superlink", f"127.0.0.1:{relay.port}",
            "--node-config", "partition-id=0 num-partitions=1",
            "--runtime-port", str(free_port()),
        ]  # fmt: skip
        node = spawn(command, flower_env(state / "home" / "node-1"), log)
        try:
            wait_for(lambda: NODE_ID.search(read(log)) is not None, 180, "the node's registration")
            yield node, relay, log
        finally:
            stop([node])


def read(log: Path) -> str:
    return log.read_text(errors="replace")


def test_a_supernode_waits_for_a_superlink_whose_port_cuts_its_handshakes(tmp_path: Path) -> None:
    with node_behind_relay(tmp_path) as (node, relay, log):
        relay.cut()  # what Docker's proxy does while the SuperLink container restarts
        wait_for(lambda: relay.refused >= 3, 60, "the node to dial the cut port again")
        relay.mend()
        wait_for(lambda: "Connection successful after" in read(log), 60, "the node's reconnection")
        assert node.poll() is None, read(log)[-3000:]
        output = read(log)
    assert "Giving up" not in output, output[-3000:]
    assert len(set(NODE_ID.findall(output))) == 1  # the same node, not a new registration


def test_a_supernode_that_gives_up_on_the_superlink_exits(tmp_path: Path) -> None:
    with node_behind_relay(tmp_path) as (node, relay, log):
        children = descendants(node.pid)
        assert "flower-superexec" in programs(children)
        relay.cut(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")  # not TLS
        wait_for(lambda: node.poll() is not None, EXIT_SECONDS, "the node to exit")
    output = read(log)
    # Flower's reason to give up ("Giving up reconnection" follows only after more than one try).
    assert "SSL/TLS handshake error detected" in output, output[-3000:]
    assert node.returncode == 1, output[-3000:]
    assert "exiting so that a restart joins the federation again" in output
    # Nothing it started is left behind: SuperExec, prefork server, ClientApps.
    assert programs(wait_gone(children, 10)) == []

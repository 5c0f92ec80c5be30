"""`fedllm supernode`: Flower's SuperNode presenting this site's client certificate."""

import os
import sys
from pathlib import Path

from fedllm.certcheck import check_certificate
from fedllm.mtls import present_client_certificate
from fedllm.processes import stop_descendants
from supernode import polling, prefork

# Flower's SuperExec asks its SuperNode for a task (a message to start a ClientApp for) every
# second. Every 0.5 s starts a ClientApp 0.25 s sooner on average; an idle node then uses
# 1.2% of a CPU (measured: 0.8% at 1 s, 4.4% at 0.1 s: CPU a training node would lose).
SUPEREXEC_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.5"}


def serve(certs: Path, name: str, superlink: str, node_config: str, runtime_port: int) -> None:
    """Validate the site certificate, then run flower-supernode in this process."""
    cert, key, ca = certs / f"{name}.crt", certs / f"{name}.key", certs / "ca.crt"
    info = check_certificate(cert, key, ca, "client")
    print(f"fedllm: client certificate {info.summary()}", file=sys.stderr, flush=True)
    present_client_certificate(cert, key)
    for variable, value in SUPEREXEC_POLL.items():
        os.environ.setdefault(variable, value)  # inherited by the SuperExec Flower starts
    prefork.start()  # ClientApps forked from a parent that has imported torch & co.
    polling.shorten_waits()  # messages seen within 1 s, replies sent within 0.05 s
    from flwr.supercore.exit import add_exit_handler
    from flwr.supernode.cli import flower_supernode

    # On SIGTERM/SIGINT, before Flower's 5 s force-exit timer starts: take the SuperExec and
    # its ClientApps down with this process instead of leaving them to notice it is gone.
    add_exit_handler(stop_descendants, run_before_force_exit=True)

    sys.argv = [
        "flower-supernode",
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--node-config", node_config,
        "--port", str(runtime_port),
    ]  # fmt: skip
    flower_supernode()

"""`fedllm supernode`: Flower's SuperNode presenting this site's client certificate."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fedllm.flower_internals import polling, prefork, reconnect
from fedllm.flower_internals.mtls import present_client_certificate
from fedllm.identity.certcheck import check_certificate
from fedllm.identity.node_key import write_flower_private_key
from fedllm.orchestration.processes import stop_descendants

# Flower's SuperExec asks its SuperNode for a task (a message to start a ClientApp for) every
# second. Every 0.5 s starts a ClientApp 0.25 s sooner on average; an idle node then uses
# 1.2% of a CPU (measured: 0.8% at 1 s, 4.4% at 0.1 s: CPU a training node would lose).
SUPEREXEC_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.5"}
LOST = (
    "Flower's SuperNode gave up on the SuperLink (its error is logged above); exiting so that"
    " a restart joins the federation again"
)


def serve(certs: Path, name: str, superlink: str, node_config: str, runtime_port: int) -> None:
    """Validate the site certificate, then run flower-supernode in this process."""
    cert, key, ca = certs / f"{name}.crt", certs / f"{name}.key", certs / "ca.crt"
    info = check_certificate(cert, key, ca, "client")
    print(f"fedllm: client certificate {info.summary()}", file=sys.stderr, flush=True)
    present_client_certificate(cert, key)
    # One key per site: Flower signs with the certificate's key (the operator registered its
    # public half from the certificate). The OpenSSH copy Flower reads lives while we do.
    auth_dir = Path(tempfile.mkdtemp(prefix="fedllm-node-key-"))
    atexit.register(shutil.rmtree, auth_dir, ignore_errors=True)
    auth_key = write_flower_private_key(key, auth_dir)
    for variable, value in SUPEREXEC_POLL.items():
        os.environ.setdefault(variable, value)  # inherited by the SuperExec Flower starts
    prefork.start()  # ClientApps forked from a parent that has imported torch & co.
    polling.shorten_waits()  # messages seen within 1 s (0.1 s just after one), replies in 0.05 s
    reconnect.retry_cut_handshakes()  # a SuperLink restarting behind a proxy is waited for
    from flwr.supercore.exit import ExitCode, add_exit_handler, flwr_exit
    from flwr.supernode.cli import flower_supernode

    # On SIGTERM/SIGINT, before Flower's 5 s force-exit timer starts: take the SuperExec and
    # its ClientApps down with this process instead of leaving them to notice it is gone.
    add_exit_handler(stop_descendants, run_before_force_exit=True)

    sys.argv = [
        "flower-supernode",
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--auth-supernode-private-key", str(auth_key),
        "--node-config", node_config,
        "--port", str(runtime_port),
    ]  # fmt: skip
    flower_supernode()
    # Flower's Fleet loop only ends when it gives up on the SuperLink, after an error it takes
    # for permanent (an SSL/TLS error other than a cut-short handshake, see
    # fedllm.flower_internals.reconnect; an HTTP status it does not retry). It then returns
    # without stopping its Runtime API thread, which kept this process alive (and healthy to a
    # health check) but outside the federation for good: a ServerApp waiting for `min-nodes`
    # waited forever. Exit instead, through Flower's exit path (the handler above stops the
    # SuperExec and ClientApps, Flower's own the Runtime API), so that the restart policy or
    # `fedllm up` starts a node that registers again.
    flwr_exit(ExitCode.SUPERNODE_CONNECTION_ERROR, LOST)

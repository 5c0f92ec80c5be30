"""`fedllm supernode`: Flower's SuperNode presenting this site's client certificate."""

import logging
import sys
from pathlib import Path

from fedllm.certcheck import check_certificate
from fedllm.mtls import present_client_certificate

log = logging.getLogger("fedllm.supernode")


def serve(certs: Path, name: str, superlink: str, node_config: str, runtime_port: int) -> None:
    """Validate the site certificate, then run flower-supernode in this process."""
    cert, key, ca = certs / f"{name}.crt", certs / f"{name}.key", certs / "ca.crt"
    info = check_certificate(cert, key, ca, "client")
    days = info.seconds_left() / 86400
    log.warning(
        "client certificate %s sha256 %s, %.0f days left", info.subject, info.fingerprint, days
    )
    present_client_certificate(cert, key)
    from flwr.supernode.cli import flower_supernode

    sys.argv = [
        "flower-supernode",
        "--superlink", superlink,
        "--root-certificates", str(ca),
        "--node-config", node_config,
        "--port", str(runtime_port),
    ]  # fmt: skip
    flower_supernode()

"""`fedllm supernode`: Flower's SuperNode presenting this site's client certificate."""

import sys
from pathlib import Path

from fedllm.certcheck import check_certificate
from fedllm.mtls import present_client_certificate


def serve(certs: Path, name: str, superlink: str, node_config: str, runtime_port: int) -> None:
    """Validate the site certificate, then run flower-supernode in this process."""
    cert, key, ca = certs / f"{name}.crt", certs / f"{name}.key", certs / "ca.crt"
    info = check_certificate(cert, key, ca, "client")
    print(f"fedllm: client certificate {info.summary()}", file=sys.stderr, flush=True)
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

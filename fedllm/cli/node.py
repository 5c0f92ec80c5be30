"""`fedllm node register|unregister|list`: the operator manages which sites may join.

Imports are lazy, like fedllm.cli.main's: `fedllm --help` does not load Flower.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Register, unregister and list SuperNodes (operator certificate).")
console = Console()
Certs = Annotated[Path, typer.Option(help="Directory with ca.crt, operator.crt/.key.")]
Superlink = Annotated[str, typer.Option(help="SuperLink gateway HOST:PORT.")]
SiteCert = Annotated[Path, typer.Argument(help="The site's certificate, SITE.crt.")]


def operator_link(certs: Path) -> Path:
    """Check the operator certificate and present it from now on; the CA's path."""
    from fedllm.flower_internals.mtls import present_client_certificate
    from fedllm.identity.certcheck import check_certificate

    cert, key, ca = certs / "operator.crt", certs / "operator.key", certs / "ca.crt"
    check_certificate(cert, key, ca, "client")
    present_client_certificate(cert, key)
    return ca


@app.command("register")
def register_command(certificate: SiteCert, certs: Certs, superlink: Superlink) -> None:
    """Register the site's certificate key, under its CN, as the only key it may join with."""
    from fedllm.identity.node_registry import certified_site, control_client, register

    site = certified_site(certificate, certs / "ca.crt")
    with control_client(superlink, operator_link(certs)) as client:
        node_id, new = register(client, site)
    state = "registered" if new else "already registered"
    console.print(f"{site.name}: {state} as node {node_id}")


@app.command("unregister")
def unregister_command(certificate: SiteCert, certs: Certs, superlink: Superlink) -> None:
    """Unregister the node holding the site's key (also for a revoked or expired certificate)."""
    from fedllm.identity.node_registry import control_client, listed_site, unregister

    site = listed_site(certificate)
    with control_client(superlink, operator_link(certs)) as client:
        node_id = unregister(client, site)
    console.print(f"{site.name}: node {node_id} unregistered")


@app.command("list")
def list_command(certs: Certs, superlink: Superlink) -> None:
    """Registered nodes: id, site name, status, key."""
    from fedllm.identity.node_key import header_value
    from fedllm.identity.node_registry import control_client, registered

    with control_client(superlink, operator_link(certs)) as client:
        nodes = registered(client)
    table = Table("node id", "site", "status", "key (flwr-public-key, start)")
    for node in nodes:
        table.add_row(str(node.node_id), node.name, node.status, header_value(node.public_key)[:24])
    console.print(table)

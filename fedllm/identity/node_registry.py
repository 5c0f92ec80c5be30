"""Registering sites with Flower's SuperNode authentication, from their CA-signed certificates.

A site's identity is its certificate: the CN names it and the certificate's public key is the
only key Flower accepts from it. Registration goes through Flower's own Control API client
(`flwr supernode register/unregister/list` use the same one), with the node's name set to the
CN, which is what the gateway binds certificates to keys with.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
from flwr.cli.utils import flwr_cli_exc_handler
from flwr.proto.control_pb2 import (  # pylint: disable=E0611
    ListNodesRequest,
    RegisterNodeRequest,
    UnregisterNodeRequest,
)
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

from fedllm.errors import FedllmError
from fedllm.identity.certcheck import check_issued, read_certificate
from fedllm.identity.node_key import public_key_pem

# A name that is safe in the gateway's nginx map and in file names.
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SiteKey:
    """A site's name (its certificate CN) and its public key as Flower stores it."""

    name: str
    public_key: bytes


def site_key(cert: x509.Certificate, cert_path: Path) -> SiteKey:
    """The CN and EC public key of a SuperNode certificate (`OU=supernode`)."""
    subject = cert.subject
    units = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != ["supernode"]:
        raise FedllmError(f"{cert_path}: not a SuperNode certificate (OU={','.join(units)})")
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or not SITE_NAME.fullmatch(names[0]):
        raise FedllmError(f"{cert_path}: CN must be one name of letters, digits, '.', '_', '-'")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise FedllmError(f"{cert_path}: Flower's node authentication needs an EC key")
    return SiteKey(names[0], public_key_pem(key))


def certified_site(cert_path: Path, ca_path: Path) -> SiteKey:
    """The site a certificate names, once checked: issued by the CA, valid, not revoked."""
    cert = check_issued(cert_path, ca_path, "client")
    crl_path = ca_path.with_name("ca.crl")
    if crl_path.is_file():
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise FedllmError(f"{cert_path}: revoked in {crl_path}")
    return site_key(cert, cert_path)


def listed_site(cert_path: Path) -> SiteKey:
    """The site of a certificate without judging it (to unregister a revoked or expired one)."""
    return site_key(read_certificate(cert_path), cert_path)


@contextmanager
def control_client(address: str, ca: Path) -> Iterator[ControlHttpClient]:
    """Flower's Control API client for the SuperLink (or gateway) at `address`.

    Built as `flwr`'s is (flwr/cli/utils.py), without its connection file and account login,
    which the open-source SuperLink does not use.
    """
    client = ControlHttpClient.from_server_address(
        address,
        insecure=False,
        root_certificates=str(ca),
        interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor("flwr CLI")],
    )
    try:
        with flwr_cli_exc_handler():
            yield client
    except click.ClickException as err:
        raise FedllmError(f"SuperLink {address}: {err.format_message()}") from None
    finally:
        client.close()


def registered(client: ControlHttpClient) -> list[NodeInfo]:
    """Every node Flower still knows (registered, online or offline)."""
    return [node for node in client.ListNodes(ListNodesRequest()).nodes_info
            if node.status != "unregistered"]  # fmt: skip


def register(client: ControlHttpClient, site: SiteKey) -> tuple[int, bool]:
    """Register the site's key under its name; (node id, whether it is new). Idempotent."""
    for node in registered(client):
        if node.public_key == site.public_key:
            if node.name != site.name:
                raise FedllmError(f"this key is registered as {node.name!r}, not {site.name!r}")
            return node.node_id, False
    reply = client.RegisterNode(RegisterNodeRequest(public_key=site.public_key, name=site.name))
    return reply.node_id, True


def unregister(client: ControlHttpClient, site: SiteKey) -> int:
    """Unregister the node holding the site's key; its node id."""
    for node in registered(client):
        if node.public_key == site.public_key:
            client.UnregisterNode(UnregisterNodeRequest(node_id=node.node_id))
            return node.node_id
    raise FedllmError(f"no registered node holds the key of {site.name!r}")

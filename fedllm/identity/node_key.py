"""One key per site: the certificate's EC key, in the formats Flower's SuperNode auth uses.

Flower 1.42 reads the SuperNode's private key in OpenSSH format (`--auth-supernode-private-key`),
registers public keys as PEM SubjectPublicKeyInfo, and sends `flwr-public-key` as the base64
of those PEM bytes (flwr/supernode/node_auth_http_interceptor.py). Nothing here creates a key.
"""

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedllm.errors import FedllmError

_PEM_SPKI = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """The bytes Flower registers and compares: PEM SubjectPublicKeyInfo."""
    return key.public_bytes(*_PEM_SPKI)


def header_value(public_pem: bytes) -> str:
    """What a SuperNode holding this key sends as `flwr-public-key`."""
    return base64.b64encode(public_pem).decode("ascii")


def openssh_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """The public key as `flwr supernode register` reads it."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def write_flower_private_key(key_path: Path, directory: Path) -> Path:
    """Write the site's private key in OpenSSH format (mode 0600) into `directory`."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise FedllmError(f"{key_path}: not a usable PEM private key ({err})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FedllmError(f"{key_path}: Flower's node authentication needs an EC key")
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / "flower-auth.key"
    handle, temporary = tempfile.mkstemp(dir=directory)  # created 0600
    with os.fdopen(handle, "wb") as sink:
        sink.write(data)
    os.replace(temporary, target)
    return target

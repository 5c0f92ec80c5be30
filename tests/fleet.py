"""Test helper: a Fleet API request through the gateway, signed as a Flower SuperNode signs it."""

import base64
import datetime as dt
import ssl
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def signed_post(
    address: str, ca: Path, cert: Path, key: Path, path: str, body: Message, age: float = 0.0
) -> tuple[int, str]:
    """POST `body` to /v1/fleet/`path` presenting `cert` (+ its key), signed with `key`.

    `age` backdates the signed timestamp by that many seconds.
    """
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(cert, cert.with_suffix(".key"))
    private = load_key(key)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)).isoformat()
    signature = private.sign(stamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/protobuf",
        "flwr-public-key": base64.b64encode(public).decode(),
        "flwr-timestamp": stamp,
        "flwr-signature": base64.b64encode(signature).decode(),
    }
    with httpx.Client(verify=context, timeout=10) as client:
        url = f"https://{address}/v1/fleet/{path}"
        response = client.post(url, headers=headers, content=body.SerializeToString())
    return response.status_code, response.text

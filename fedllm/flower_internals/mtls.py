"""Make Flower's HTTP clients present a client certificate (mutual TLS).

Flower 1.42 builds every HTTP client in `ProtobufClient.__init__` and has no option for a
client certificate. This module wraps that one constructor, in the process that calls
`present_client_certificate`, so HTTPS clients verify the server *and* present our
certificate. It checks the constructor's parameters before wrapping it.
"""

import inspect
import ssl
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from flwr.supercore.protobuf.client import ProtobufClient

from fedllm.flower_internals import require

EXPECTED_PARAMETERS = ("self", "base_url", "interceptors", "verify", "timeout", "retry_invoker")


def check_flower_version() -> None:
    """Refuse to patch a Flower whose client constructor we have not checked."""
    parameters = tuple(inspect.signature(ProtobufClient.__init__).parameters)
    require("mtls", parameters == EXPECTED_PARAMETERS, f"ProtobufClient{parameters}")


def client_context(verify: ssl.SSLContext | bool | str, cert: Path, key: Path) -> ssl.SSLContext:
    """An SSL context that verifies the server like `verify` asks and presents `cert`."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


def present_client_certificate(cert: Path, key: Path) -> None:
    """From now on, HTTPS clients in this process present `cert` (idempotent)."""
    check_flower_version()
    original: Callable[..., None] = getattr(
        ProtobufClient.__init__, "__wrapped__", ProtobufClient.__init__
    )

    @wraps(original)
    def init(self: ProtobufClient, base_url: str, **kwargs: Any) -> None:
        verify = kwargs.get("verify", True)
        if base_url.startswith("https://") and verify is not False:
            kwargs["verify"] = client_context(verify, cert, key)
        original(self, base_url, **kwargs)

    ProtobufClient.__init__ = init  # type: ignore[method-assign]

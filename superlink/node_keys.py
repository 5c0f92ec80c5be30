"""The gateway's certificate-to-key binding, kept in step with Flower's node registry.

nginx refuses a Fleet request unless its `flwr-public-key` header is a key registered under
the name in the client certificate's CN (nginx.conf.template). The pairs come from Flower's
registry over the loopback Control API and live in `state/node-keys.map`, which nginx
includes; it is rewritten when the registry changes and applied by a reload (SIGHUP).
"""

import sys
import time
from collections.abc import Callable
from pathlib import Path

from flwr.supercore.control import ControlHttpClient

from fedllm.errors import FedllmError
from fedllm.identity import audit
from fedllm.identity.certcheck import read_certificate
from fedllm.identity.node_key import header_value
from fedllm.identity.node_registry import (
    SITE_NAME,
    certified_site,
    control_client,
    register,
    registered,
    site_key,
)

MAP_FILE = "node-keys.map"
# Control API calls through the gateway after which the registry may have changed.
REGISTRY_CALLS = ("/v1/control/register-node", "/v1/control/unregister-node")


class NodeKeys:
    """Flower's registry on the loopback SuperLink at `address`, as the gateway's map."""

    def __init__(self, state: Path, address: str, ca: Path) -> None:
        self.path = state / MAP_FILE
        self.audit = state / audit.AUDIT_FILE
        self.address, self.ca = address, ca
        self.bound: dict[str, tuple[str, int]] = {}  # "CN key" -> (CN, node id)

    def wait_ready(self, alive: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until the loopback SuperLink answers the Control API."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with control_client(self.address, self.ca) as client:
                    registered(client)
                return
            except FedllmError:
                if not alive() or time.monotonic() > deadline:
                    message = f"flower-superlink did not answer on {self.address}"
                    raise FedllmError(message) from None
                time.sleep(0.3)

    def register_directory(self, certs: Path) -> None:
        """Register every valid, unrevoked SuperNode certificate found in `certs`."""
        with control_client(self.address, self.ca) as client:
            for cert_path in sorted(certs.glob("*.crt")):
                self._register_file(client, cert_path, certs / "ca.crt")

    def refresh(self) -> bool:
        """Rewrite the map from Flower's registry; whether it changed (audit entries if so)."""
        with control_client(self.address, self.ca) as client:
            nodes = registered(client)
        bound = {f"{node.name} {header_value(node.public_key)}": (node.name, node.node_id)
                 for node in nodes if SITE_NAME.fullmatch(node.name)}  # fmt: skip
        if bound == self.bound and self.path.exists():
            return False
        for pair in bound.keys() - self.bound.keys():
            self._audit("node-key-bound", *bound[pair])
        for pair in self.bound.keys() - bound.keys():
            self._audit("node-key-unbound", *self.bound[pair])
        self.bound = bound
        lines = [f'"{pair}" 1;' for pair in sorted(bound)]  # names and base64: no quoting
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(f"{line}\n" for line in lines))
        temporary.replace(self.path)
        return True

    def _register_file(self, client: ControlHttpClient, cert_path: Path, ca: Path) -> None:
        try:
            site_key(read_certificate(cert_path), cert_path)
        except FedllmError:
            return  # not a SuperNode certificate (superlink.crt, operator.crt, ca.crt)
        try:
            site = certified_site(cert_path, ca)
        except FedllmError as err:
            print(f"fedllm: not registered: {err}", file=sys.stderr, flush=True)
            return
        node_id, new = register(client, site)
        if new:
            self._audit("node-registered", site.name, node_id, certificate=str(cert_path))

    def _audit(self, event: str, name: str, node_id: int, **fields: str) -> None:
        audit.append(self.audit, event, node=name, node_id=node_id, **fields)
        print(f"fedllm: {event}: {name} (node {node_id})", file=sys.stderr, flush=True)

"""One verified identity per site, through a real SuperLink, gateway and SuperNodes on loopback.

Node A (node-1) holds a valid certificate and its registered key; every way it might pose as
node B (node-2) or as a new node is refused, B stays online, and the audit log names A.
"""

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.fleet_pb2 import (  # pylint: disable=E0611
    ActivateNodeRequest,
    DeactivateNodeRequest,
    PullMessagesRequest,
    PushMessagesRequest,
    RegisterNodeFleetRequest,
    UnregisterNodeFleetRequest,
)
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest  # pylint: disable=E0611
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from google.protobuf.message import Message

from fedllm.identity.audit import read
from fedllm.identity.operator import Operator
from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import flower_env, spawn, stop
from tests.federations import wait_for
from tests.fleet import load_key, signed_post
from tests.pki import generate, issue

pytestmark = pytest.mark.integration
FEDLLM = [sys.executable, "-m", "fedllm"]


@dataclass
class Federation:
    root: Path
    pki: Path
    port: int
    node_ids: dict[str, int]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fleet(
        self, path: str, body: Message, cert: str, key: str, age: float = 0.0
    ) -> tuple[int, str]:
        """POST a signed Fleet request presenting `cert`, signed with `key`'s private key."""
        return signed_post(self.address, self.pki / "ca.crt", self.pki / f"{cert}.crt",
                           self.pki / f"{key}.key", path, body, age)  # fmt: skip

    def nodes(self) -> dict[str, str]:
        """Flower's status of each node id, from `flwr supernode ls` as the operator."""
        home = self.root / "home" / "operator"
        Operator(self.address, self.pki, home)._write_home()
        command = [*FEDLLM, "flwr", "--certs", str(self.pki), "supernode", "ls", "local",
                   "--format", "json"]  # fmt: skip
        result = subprocess.run(
            command, env=flower_env(home), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return {node["node-id"]: node["status"] for node in json.loads(result.stdout)["nodes"]}

    def node(self, name: str, log: str) -> subprocess.Popen[bytes]:
        command = [*FEDLLM, "supernode", "--certs", str(self.pki), "--name", name,
                   "--superlink", self.address, "--runtime-port", str(free_port())]  # fmt: skip
        return spawn(command, flower_env(self.root / "home" / log), self.root / f"{log}.log")

    def audit(self) -> list[dict[str, str]]:
        return read(self.root / "state" / "audit.jsonl")


def healthy(pki: Path, address: str) -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "operator.crt", pki / "operator.key")
    try:
        return httpx.get(f"https://{address}/health", verify=context).is_success
    except httpx.HTTPError:
        return False


def fedllm_node(fed: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*FEDLLM, "node", *args, "--certs", str(fed.pki), "--superlink", fed.address]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("identity")
    pki = generate(root / "pki", "node-1", "node-2")
    port = free_port()
    command = [*FEDLLM, "superlink", "--certs", str(pki), "--state", str(root / "state"),
               "--host", "127.0.0.1", "--port", str(port), "--register-certs"]  # fmt: skip
    superlink = spawn(command, flower_env(root / "home" / "superlink"), root / "superlink.log")
    processes = [superlink]
    try:
        wait_for(lambda: healthy(pki, f"127.0.0.1:{port}"), 60, "the SuperLink")
        ids = {e["node"]: int(e["node_id"]) for e in read(root / "state" / "audit.jsonl")
               if e.get("event") == "node-registered"}  # fmt: skip
        served = Federation(root, pki, port, ids)
        # Certified by the same CA after the SuperLink registered its directory: not registered.
        issue(pki, "node-3")
        processes += [served.node("node-1", "node-1"), served.node("node-2", "node-2")]
        wait_for(
            lambda: all(served.nodes().get(str(i)) == "online" for i in ids.values()),
            90,
            "node-1 and node-2 online",
        )
        yield served
        assert superlink.poll() is None, "the SuperLink must survive every refused request"
        assert served.nodes()[str(ids["node-2"])] == "online", "node B must be unaffected"
    finally:
        stop(processes)


def test_the_site_certificate_key_is_the_registered_flower_key(fed: Federation) -> None:
    assert set(fed.node_ids) == {"node-1", "node-2"}
    joined = [e for e in fed.audit() if e.get("uri") == "/v1/fleet/activate-node"]
    assert {e["subject"].split(",")[0] for e in joined if e["status"] == "200"} >= {
        "CN=node-1",
        "CN=node-2",
    }


def test_a_fresh_key_cannot_register_a_new_node(fed: Federation) -> None:
    (fed.pki / "fresh.key").write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = (
        load_key(fed.pki / "fresh.key")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    before = set(fed.nodes())
    # under A's certificate, signed with a key nobody registered: the gateway refuses
    assert fed.fleet("register-node", RegisterNodeFleetRequest(public_key=public),
                     "node-1", "fresh")[0] == 403  # fmt: skip
    assert fed.fleet("activate-node", ActivateNodeRequest(public_key=public, heartbeat_interval=30),
                     "node-1", "fresh")[0] == 403  # fmt: skip
    # signed with A's own key, asking for a new identity: Flower refuses self-registration
    status, _ = fed.fleet(
        "register-node", RegisterNodeFleetRequest(public_key=public), "node-1", "node-1"
    )
    assert status in (400, 401, 403, 409, 412)
    assert set(fed.nodes()) == before


@pytest.mark.parametrize(
    "path",
    [
        "pull-messages",
        "push-messages",
        "send-node-heartbeat",
        "activate-node",
        "deactivate-node",
        "unregister-node",
    ],
)
def test_a_node_cannot_act_for_another(fed: Federation, path: str) -> None:
    b = fed.node_ids["node-2"]
    b_public = (
        load_key(fed.pki / "node-2.key")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    bodies: dict[str, Message] = {
        "activate-node": ActivateNodeRequest(public_key=b_public, heartbeat_interval=30),
        "pull-messages": PullMessagesRequest(node=Node(node_id=b)),
        "push-messages": PushMessagesRequest(node=Node(node_id=b)),
        "send-node-heartbeat": SendNodeHeartbeatRequest(
            node=Node(node_id=b), heartbeat_interval=30
        ),
        "deactivate-node": DeactivateNodeRequest(node_id=b),
        "unregister-node": UnregisterNodeFleetRequest(node_id=b),
    }
    status, text = fed.fleet(path, bodies[path], "node-1", "node-1")
    assert status == 401, text  # Flower: the node id is not the one registered for A's key


def test_b_key_under_a_certificate_is_refused_at_the_gateway(fed: Federation) -> None:
    b = fed.node_ids["node-2"]
    status, text = fed.fleet("pull-messages", PullMessagesRequest(node=Node(node_id=b)),
                             "node-1", "node-2")  # fmt: skip
    assert status == 403 and text.startswith("fedllm gateway: node key not registered")


def test_a_signature_outside_the_time_window_is_refused(fed: Federation) -> None:
    a = fed.node_ids["node-1"]
    body = PullMessagesRequest(node=Node(node_id=a))
    assert fed.fleet("pull-messages", body, "node-1", "node-1")[0] == 200
    assert fed.fleet("pull-messages", body, "node-1", "node-1", age=400)[0] == 401


def test_a_certified_but_unregistered_node_cannot_join(fed: Federation) -> None:
    node = fed.node("node-3", "node-3")
    try:
        node.wait(timeout=90)
    finally:
        stop([node])
    assert node.returncode != 0
    assert "node-3" not in {e.get("node") for e in fed.audit()}
    refused = [e for e in fed.audit() if e.get("subject", "").startswith("CN=node-3,")]
    assert refused and all(e["status"] == "403" and e["key_bound"] == "0" for e in refused)


def pull_as_node_5(fed: Federation) -> int:
    """Status of a Fleet request with node-5's certificate and key: 403 while unbound."""
    return fed.fleet("pull-messages", PullMessagesRequest(), "node-5", "node-5")[0]


def test_registration_from_the_certificate_then_unregistration(fed: Federation) -> None:
    other = generate(fed.root / "other", "node-4") / "node-4.crt"
    result = fedllm_node(fed, "register", str(other))
    assert result.returncode == 1
    assert result.stderr.startswith("fedllm: error: ") and "not issued by the CA" in result.stderr
    operator = fedllm_node(fed, "register", str(fed.pki / "operator.crt"))
    assert operator.returncode == 1 and "not a SuperNode certificate" in operator.stderr

    issue(fed.pki, "node-5")
    first = fedllm_node(fed, "register", str(fed.pki / "node-5.crt"))
    assert first.returncode == 0, first.stderr
    node_id = first.stdout.split()[-1]
    again = fedllm_node(fed, "register", str(fed.pki / "node-5.crt"))
    assert again.returncode == 0 and f"already registered as node {node_id}" in again.stdout
    keys = fed.root / "state" / "node-keys.map"
    wait_for(lambda: '"node-5 ' in keys.read_text(), 10, "the gateway to bind node-5")
    wait_for(lambda: pull_as_node_5(fed) != 403, 30, "the gateway to reload the binding")
    node = fed.node("node-5", "node-5")
    try:
        wait_for(lambda: fed.nodes().get(node_id) == "online", 60, "node-5 online")
        assert fedllm_node(fed, "unregister", str(fed.pki / "node-5.crt")).returncode == 0
        wait_for(lambda: '"node-5 ' not in keys.read_text(), 10, "the gateway to unbind node-5")
        wait_for(lambda: pull_as_node_5(fed) == 403, 30, "the gateway to refuse node-5's key")
    finally:
        stop([node])
    events = [(e.get("event"), e.get("node")) for e in fed.audit()]
    assert ("node-key-bound", "node-5") in events and ("node-key-unbound", "node-5") in events
    calls = [e for e in fed.audit() if e.get("uri", "").startswith("/v1/control/")]
    assert {"/v1/control/register-node", "/v1/control/unregister-node"} <= {
        e["uri"] for e in calls if e["subject"].startswith("CN=operator,")
    }


def test_every_refusal_is_audited_with_the_certificate_subject(fed: Federation) -> None:
    refused = [e for e in fed.audit() if e.get("source") == "gateway" and int(e["status"]) >= 400]
    by_a = {(e["uri"], e["status"]) for e in refused if e["subject"].startswith("CN=node-1,")}
    assert ("/v1/fleet/register-node", "403") in by_a  # fresh key
    assert ("/v1/fleet/pull-messages", "403") in by_a  # B's key under A's certificate
    assert ("/v1/fleet/pull-messages", "401") in by_a  # B's node id, or a stale signature
    assert ("/v1/fleet/deactivate-node", "401") in by_a
    assert all(e["fingerprint_sha1"] for e in refused if e["subject"])

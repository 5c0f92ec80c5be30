"""Mutual TLS at the SuperLink gateway, through real processes on loopback."""

import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import stop
from tests.pki import CERTS, expired, generate, issue, new_key, self_signed, sh

pytestmark = pytest.mark.integration
REFUSED = {400, 401, 403, 495, 496}


class Gateway:
    def __init__(self, pki: Path, port: int) -> None:
        self.pki, self.port = pki, port

    def request(self, path: str, cert: str | None, method: str = "POST") -> int | str:
        """HTTP status, or 'handshake' when TLS refused the client."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if cert is not None:
            crt = Path(cert) if "/" in cert else self.pki / f"{cert}.crt"
            context.load_cert_chain(crt, crt.with_suffix(".key"))
        headers = {"Content-Type": "application/protobuf"}
        try:
            with httpx.Client(verify=context, timeout=10) as client:
                url = f"https://127.0.0.1:{self.port}{path}"
                return client.request(method, url, headers=headers, content=b"").status_code
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            return "handshake"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("mtls")
    pki = generate(root / "pki", "node-1", "to-revoke")
    expired(pki, "expired")
    issue(pki, "server-only", "v3_server")
    self_signed(root, "selfsigned")
    generate(root / "other", "node-1")
    port = free_port()
    command = [sys.executable, "-m", "fedllm", "superlink", "--certs", str(pki),
               "--state", str(root / "state"), "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    log = (root / "superlink.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    served = Gateway(pki, port)
    try:
        for _ in range(120):
            if served.request("/health", "operator", "GET") == 200:
                break
            assert process.poll() is None, (root / "superlink.log").read_text()
            time.sleep(0.5)
        yield served
        assert process.poll() is None, "the SuperLink must survive every refused client"
        assert served.request("/health", "operator", "GET") == 200
    finally:
        stop([process])


def test_valid_roles_pass(gateway: Gateway) -> None:
    assert gateway.request("/v1/control/list-runs", "operator") == 200
    assert gateway.request("/health", "node-1", "GET") == 200


@pytest.mark.parametrize(
    "cert",
    [None, "SELF", "OTHER", "expired", "server-only"],
    ids=["no-certificate", "self-signed", "other-ca", "expired", "server-auth-only"],
)
def test_untrusted_clients_are_refused(gateway: Gateway, cert: str | None) -> None:
    root = gateway.pki.parent
    paths = {"SELF": str(root / "selfsigned.crt"), "OTHER": str(root / "other/node-1.crt")}
    chosen = paths.get(cert or "", cert)
    for path in ("/v1/fleet/pull-messages", "/v1/control/list-runs", "/health"):
        assert gateway.request(path, chosen) in REFUSED | {"handshake"}


def test_plain_http_is_refused(gateway: Gateway) -> None:
    response = httpx.post(f"http://127.0.0.1:{gateway.port}/v1/control/list-runs", timeout=10)
    assert response.status_code in REFUSED


@pytest.mark.parametrize(
    "path", ["/v1/control/list-runs", "/v1/control/start-run", "/v1/control/register-node"]
)
def test_supernode_certificate_cannot_use_control(gateway: Gateway, path: str) -> None:
    assert gateway.request(path, "node-1") == 403


def test_operator_certificate_cannot_use_fleet(gateway: Gateway) -> None:
    assert gateway.request("/v1/fleet/pull-messages", "operator") == 403


@pytest.mark.parametrize("cert", ["operator", "node-1"])
@pytest.mark.parametrize(
    "path", ["/v1/runtime/get-nodes", "/v1/fleet/../runtime/get-nodes", "//v1/runtime/get-nodes"]
)
def test_runtime_api_is_never_reachable(gateway: Gateway, cert: str, path: str) -> None:
    assert gateway.request(path, cert) == 403


def test_revocation_applies_without_a_restart(gateway: Gateway) -> None:
    assert gateway.request("/health", "to-revoke", "GET") == 200
    assert sh(CERTS / "revoke.sh", gateway.pki, gateway.pki / "to-revoke.crt").returncode == 0
    for _ in range(20):
        if gateway.request("/health", "to-revoke", "GET") != 200:
            break
        time.sleep(0.5)
    assert gateway.request("/v1/fleet/pull-messages", "to-revoke") in REFUSED | {"handshake"}
    assert gateway.request("/health", "node-1", "GET") == 200


def test_supernode_refuses_a_superlink_without_the_dialled_name(tmp_path: Path) -> None:
    """A server certificate from the federation CA, but for another name: no request is sent."""
    pki = generate(tmp_path / "pki", "node-1")
    env = {"FEDLLM_CA_DIR": str(pki), "FEDLLM_CERT_DAYS": "30", "FEDLLM_SAN": "DNS:elsewhere"}
    key, csr, crt = pki / "imposter.key", pki / "imposter.csr", pki / "imposter.crt"
    new_key(key)
    sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/OU=superlink/CN=elsewhere")
    sh("openssl", "ca", "-config", CERTS / "openssl.cnf", "-batch", "-notext", "-in", csr,
       "-out", crt, "-extensions", "v3_server", env=env)  # fmt: skip
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            requests.append(self.path)
            self.send_response(500)
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    command = [sys.executable, "-m", "fedllm", "supernode", "--certs", str(pki), "--name", "node-1",
               "--superlink", f"127.0.0.1:{server.server_address[1]}",
               "--runtime-port", str(free_port())]  # fmt: skip
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    node = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(8)
    finally:
        node.kill()
        output = node.communicate()[0].decode(errors="replace")
        server.shutdown()
    assert requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in output or "certificate verify failed" in output, output

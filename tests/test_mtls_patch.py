"""The one place fedllm patches Flower: client certificates on its HTTP clients."""

import ssl
from pathlib import Path

import flwr
import pytest
from flwr.supercore.protobuf.client import ProtobufClient

from fedllm.flower_internals import mtls
from tests.pki import generate


def test_pinned_flower_is_the_one_the_patch_was_checked_against() -> None:
    mtls.check_flower_version()


def test_another_flower_version_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(RuntimeError, match="re-check"):
        mtls.check_flower_version()


def test_https_clients_present_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = generate(tmp_path / "pki", "node-1")
    monkeypatch.setattr(ProtobufClient, "__init__", ProtobufClient.__init__)
    seen: list[object] = []
    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", lambda self, **kw: seen.append(kw))
    mtls.present_client_certificate(pki / "node-1.crt", pki / "node-1.key")
    mtls.present_client_certificate(pki / "node-1.crt", pki / "node-1.key")  # idempotent
    ProtobufClient.from_server_address("127.0.0.1:1", False, str(pki / "ca.crt"), [])
    ProtobufClient.from_server_address("127.0.0.1:1", True, None, [])
    assert seen == [{"certfile": str(pki / "node-1.crt"), "keyfile": str(pki / "node-1.key")}]

"""The role exporter: app children's metrics survive their exit; host figures; port errors."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fedllm.telemetry.exporter import build_registry
from tests.cli import assert_one_line_error, fedllm

# What a ClientApp child records: one training pass, then its memory.
CHILD = """
import sys
from types import SimpleNamespace
from fedllm.telemetry.sampler import record_memory
from fedllm.telemetry.training import record_training
stats = SimpleNamespace(loss=0.5, examples=64, tokens=6400, steps=4, seconds=float(sys.argv[1]))
record_training(7, int(sys.argv[2]), stats, {"train": 64, "validation": 8})
record_memory("clientapp")
"""


def certificate(path: Path, days: float) -> Path:
    """A self-signed certificate valid for `days` more days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, path.stem)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def child(metrics_dir: Path, seconds: float, server_round: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    command = [sys.executable, "-c", CHILD, str(seconds), str(server_round)]
    subprocess.run(command, env=env, check=True, timeout=120)


def scrape(metrics_dir: Path, certificates: list[Path]) -> list[Sample]:
    registry = build_registry("supernode", "node-1", metrics_dir, certificates)
    text = generate_latest(registry).decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def values(samples: list[Sample], name: str) -> list[float]:
    return [sample.value for sample in samples if sample.name == name]


@pytest.fixture(scope="module")
def exited_children(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ClientApp-like children that recorded rounds 1 and 2 and exited."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    child(metrics_dir, seconds=2.0, server_round=1)
    child(metrics_dir, seconds=4.0, server_round=2)
    return metrics_dir


def test_metrics_of_exited_children_reach_the_exporter(exited_children: Path) -> None:
    samples = scrape(exited_children, [])
    assert values(samples, "fedllm_node_examples_per_second") == [16.0]  # the later child
    assert values(samples, "fedllm_node_step_seconds") == [1.0]
    assert values(samples, "fedllm_node_last_trained_round") == [2.0]
    assert sorted(values(samples, "fedllm_node_partition_examples")) == [8.0, 64.0]
    assert values(samples, "fedllm_process_resident_memory_bytes")[0] > 1e6


def test_every_series_carries_role_and_node_and_no_pid(exited_children: Path) -> None:
    for sample in scrape(exited_children, []):
        assert sample.labels["role"] == "supernode"
        assert sample.labels["node"] == "node-1"
        assert "pid" not in sample.labels


def test_host_memory_and_certificate_expiry(tmp_path: Path) -> None:
    cert = certificate(tmp_path / "node-1.crt", days=10)
    samples = scrape(tmp_path, [cert, tmp_path / "removed.crt"])
    assert values(samples, "fedllm_memory_available_bytes")[0] > 0
    [expiry] = [s for s in samples if s.name == "fedllm_certificate_expiry_seconds"]
    assert expiry.labels["certificate"] == "node-1"
    assert 10 * 86400 - 60 < expiry.value <= 10 * 86400


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_role_exporter_on_a_taken_port(taken_port: int, tmp_path: Path) -> None:
    result = fedllm(
        "supernode", "--certs", str(tmp_path), "--name", "node-1", "--superlink", "127.0.0.1:1",
        "--metrics-port", str(taken_port), "--metrics-dir", str(tmp_path / "metrics"),
    )  # fmt: skip
    assert_one_line_error(result, f"cannot serve metrics on 127.0.0.1:{taken_port}: ")


def test_up_with_a_taken_metrics_port(taken_port: int, tmp_path: Path) -> None:
    result = fedllm("up", "--nodes", "2", "--run-dir", str(tmp_path / "run"),
                    "--metrics-port", str(taken_port))  # fmt: skip
    assert_one_line_error(result, f"cannot serve metrics on 127.0.0.1:{taken_port}: ")
    assert not (tmp_path / "run").exists()


def test_up_with_prometheus_but_no_binary(tmp_path: Path) -> None:
    result = fedllm("up", "--run-dir", str(tmp_path / "run"), "--prometheus",
                    env={"PATH": str(Path(sys.executable).parent)})  # fmt: skip
    assert_one_line_error(result, "apt-get install prometheus")

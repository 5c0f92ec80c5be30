"""Broken certificate inputs stop a role before it starts, in one line, touching nothing."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.cli import fedllm
from tests.pki import expired, generate


def fingerprint(pki: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(pki.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    pki = generate(tmp_path / "pki", "node-1")
    expired(pki, "old-node")
    return pki


def superlink(pki: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return fedllm("superlink", "--certs", str(pki), "--state", str(tmp_path / "state"),
               "--host", "127.0.0.1", "--port", "1")  # fmt: skip


def supernode(pki: Path, name: str) -> subprocess.CompletedProcess[str]:
    return fedllm("supernode", "--certs", str(pki), "--name", name, "--superlink", "127.0.0.1:1")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing-cert", "superlink.crt: file not found"),
        ("key-mismatch", "does not match"),
        ("ca-not-pem", "ca.crt: not a PEM certificate"),
    ],
)
def test_superlink_refuses_broken_certificates(
    pki: Path, tmp_path: Path, breakage: str, message: str
) -> None:
    if breakage == "missing-cert":
        (pki / "superlink.crt").unlink()
    elif breakage == "key-mismatch":
        (pki / "superlink.key").write_bytes((pki / "node-1.key").read_bytes())
    else:
        (pki / "ca.crt").write_text("not a certificate\n")
    before = fingerprint(pki)
    result = superlink(pki, tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert fingerprint(pki) == before
    assert not (tmp_path / "state").exists()


def test_supernode_refuses_its_expired_certificate(pki: Path) -> None:
    before = fingerprint(pki)
    result = supernode(pki, "old-node")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "old-node.crt: expired on 2020-02-01" in lines[0]
    assert fingerprint(pki) == before


def test_supernode_refuses_a_missing_certificate(pki: Path) -> None:
    result = supernode(pki, "nobody")
    assert result.returncode != 0
    assert "nobody.crt: file not found" in result.stderr

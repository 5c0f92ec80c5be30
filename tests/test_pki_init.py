"""`fedllm pki DIR NODE...`: what the compose `pki` service runs on every `up`."""

from pathlib import Path

from cryptography import x509

from tests.cli import assert_one_line_error, fedllm


def test_an_empty_directory_gets_a_whole_pki(tmp_path: Path) -> None:
    result = fedllm("pki", str(tmp_path / "pki"), "supernode-1", "supernode-2")
    assert result.returncode == 0, result.stderr
    for name in ("ca", "superlink", "operator", "supernode-1", "supernode-2"):
        assert (tmp_path / "pki" / f"{name}.crt").is_file()


def test_an_existing_ca_is_kept_and_only_new_nodes_get_certificates(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert fedllm("pki", str(pki), "supernode-1").returncode == 0
    before = {path.name: path.read_bytes() for path in pki.glob("*.*") if path.is_file()}
    result = fedllm("pki", str(pki), "supernode-1", "supernode-4")
    assert result.returncode == 0, result.stderr
    assert "issued supernode-4" in result.stdout
    for name, content in before.items():
        if name != "ca.crl":
            assert (pki / name).read_bytes() == content, name
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    node = x509.load_pem_x509_certificate((pki / "supernode-4.crt").read_bytes())
    assert node.issuer == ca.subject
    node.verify_directly_issued_by(ca)


def test_an_invalid_node_name_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert fedllm("pki", str(pki), "supernode-1").returncode == 0
    ca_key = (pki / "ca.key").read_bytes()
    assert_one_line_error(fedllm("pki", str(pki), "../escape"), "invalid node name")
    assert (pki / "ca.key").read_bytes() == ca_key

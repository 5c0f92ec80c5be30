"""The OpenSSL PKI tooling in certs/: generate, the site CSR workflow, revocation."""

import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.pki import CERTS, generate, new_key, sh


def test_generate_writes_the_federation(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki", "node-1", "node-2")
    for name in ("superlink", "operator", "node-1", "node-2"):
        assert (pki / f"{name}.crt").is_file()
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate((pki / "superlink.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"superlink", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    node = x509.load_pem_x509_certificate((pki / "node-1.crt").read_bytes())
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (pki / "ca.crl").is_file()


def test_generate_takes_extra_server_names(tmp_path: Path) -> None:
    env = {"FEDLLM_SUPERLINK_SANS": "DNS:fl.example.org,IP:10.1.2.3"}
    assert sh(CERTS / "generate.sh", tmp_path / "pki", env=env).returncode == 0
    server = x509.load_pem_x509_certificate((tmp_path / "pki/superlink.crt").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fl.example.org" in sans.get_values_for_type(x509.DNSName)


def test_generate_never_overwrites_a_ca(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki", "node-1")
    before = (pki / "ca.key").read_bytes()
    result = sh(CERTS / "generate.sh", pki, "node-9")
    assert result.returncode != 0
    assert "refusing to overwrite" in result.stderr
    assert (pki / "ca.key").read_bytes() == before
    assert not (pki / "node-9.crt").exists()


def test_site_csr_round_trip_keeps_the_key_at_the_site(tmp_path: Path) -> None:
    pki, site = generate(tmp_path / "pki"), tmp_path / "site"
    assert sh(CERTS / "site-request.sh", site, "hospital-a").returncode == 0
    result = sh(
        CERTS / "sign-csr.sh", pki, site / "hospital-a.csr", "hospital-a", tmp_path / "back"
    )
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "back/hospital-a.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "supernode"
    )
    assert (tmp_path / "back/ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    assert not list(pki.glob("hospital-a.key")) and not list((tmp_path / "back").glob("*.key"))


def test_sign_csr_refuses_ca_rights_and_server_auth(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki")
    key = tmp_path / "evil.key"
    new_key(key)
    for name, extension in (
        ("wants-ca", "basicConstraints=critical,CA:TRUE"),
        ("wants-server", "extendedKeyUsage=serverAuth"),
    ):
        csr = tmp_path / f"{name}.csr"
        sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}",
           "-addext", extension)  # fmt: skip
        result = sh(CERTS / "sign-csr.sh", pki, csr, name)
        assert result.returncode != 0
        assert "refused" in result.stderr
        assert not (pki / f"{name}.crt").exists()


def test_sign_csr_forces_the_supernode_role(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki")
    key, csr = tmp_path / "x.key", tmp_path / "x.csr"
    new_key(key)
    sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", "/OU=operator/CN=site-x")
    assert sh(CERTS / "sign-csr.sh", pki, csr, "site-x").returncode == 0
    cert = x509.load_pem_x509_certificate((pki / "site-x.crt").read_bytes())
    assert "OU=supernode" in cert.subject.rfc4514_string()
    assert "OU=operator" not in cert.subject.rfc4514_string()


def test_revoke_publishes_a_crl(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki", "node-1")
    assert sh(CERTS / "revoke.sh", pki, pki / "node-1.crt").returncode == 0
    crl = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    node = x509.load_pem_x509_certificate((pki / "node-1.crt").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(node.serial_number) is not None

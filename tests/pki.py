"""Test helpers: federation PKIs and odd certificates, made with the project's OpenSSL tooling."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CERTS = ROOT / "certs"


def sh(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def new_key(path: Path) -> Path:
    sh(
        "openssl",
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path,
    )
    return path


def expired(pki: Path, name: str) -> Path:
    """A client certificate that expired in 2020."""
    dates = ("-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    return issue(pki, name, "v3_client", *dates)


def generate(target: Path, *nodes: str) -> Path:
    result = sh(CERTS / "generate.sh", target, *nodes)
    assert result.returncode == 0, result.stderr
    return target


def issue(pki: Path, name: str, extensions: str = "v3_client", *ca_args: str) -> Path:
    """Sign a new key for `name` with the PKI's CA, with chosen extensions and CA options."""
    key, csr, crt = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.crt"
    new_key(key)
    sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/OU=supernode/CN={name}")
    env = {"FEDLLM_CA_DIR": str(pki), "FEDLLM_CERT_DAYS": "30", "FEDLLM_SAN": "DNS:localhost"}
    result = sh(
        "openssl", "ca", "-config", CERTS / "openssl.cnf", "-batch", "-notext", "-in", csr,
        "-out", crt, "-extensions", extensions, *ca_args, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return crt


def self_signed(target: Path, name: str) -> Path:
    key, crt = target / f"{name}.key", target / f"{name}.crt"
    result = sh(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-out", crt, "-days", "10",
        "-subj", f"/O=fedllm/OU=supernode/CN={name}",
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return crt

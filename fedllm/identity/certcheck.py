"""Startup validation of a role's certificate with `cryptography`: refuse to start when wrong."""

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedllm.errors import FedllmError

PURPOSES = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class CertificateInfo:
    """What a valid certificate tells the logs and the metrics."""

    subject: str
    fingerprint: str
    not_after: dt.datetime

    def summary(self) -> str:
        """One log line: subject, fingerprint, days left."""
        days = self.seconds_left() / 86400
        return f"{self.subject} sha256 {self.fingerprint}, {days:.0f} days left"

    def seconds_left(self) -> float:
        """Seconds until the certificate expires (negative once expired)."""
        return (self.not_after - dt.datetime.now(dt.UTC)).total_seconds()


def read_certificate(path: Path) -> x509.Certificate:
    """One PEM certificate, or a one-line error naming the file."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise FedllmError(f"{path}: file not found") from None
    except (ValueError, OSError) as err:
        raise FedllmError(f"{path}: not a PEM certificate ({err})") from None


def check_certificate(
    cert_path: Path, key_path: Path, ca_path: Path, purpose: str, names: tuple[str, ...] = ()
) -> CertificateInfo:
    """Chain to the CA, key match, validity window, EKU and (servers) the names it must carry."""
    cert = check_issued(cert_path, ca_path, purpose)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FedllmError(f"{key_path}: file not found") from None
    except (ValueError, TypeError) as err:
        raise FedllmError(f"{key_path}: not a usable PEM private key ({err})") from None
    if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
        raise FedllmError(f"{key_path}: private key does not match {cert_path}")
    missing = [name for name in names if not _carries(cert, name)]
    if missing:
        raise FedllmError(f"{cert_path}: subjectAltName lacks {', '.join(missing)}")
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(":"),
        not_after=cert.not_valid_after_utc,
    )


def check_issued(cert_path: Path, ca_path: Path, purpose: str) -> x509.Certificate:
    """A certificate the CA issued, inside its validity window, with the EKU `purpose`."""
    ca, cert = read_certificate(ca_path), read_certificate(cert_path)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as err:  # cryptography raises InvalidSignature, ValueError or TypeError
        raise FedllmError(f"{cert_path}: not issued by the CA in {ca_path} ({err})") from None
    now = dt.datetime.now(dt.UTC)
    if now < cert.not_valid_before_utc:
        raise FedllmError(f"{cert_path}: not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if now > cert.not_valid_after_utc:
        raise FedllmError(f"{cert_path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if PURPOSES[purpose] not in usages:
        raise FedllmError(f"{cert_path}: lacks extended key usage {purpose}Auth")
    return cert


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _carries(cert: x509.Certificate, name: str) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(name) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        return name.lower() in (dns.lower() for dns in sans.get_values_for_type(x509.DNSName))

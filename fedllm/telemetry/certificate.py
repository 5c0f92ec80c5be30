"""How long a role's X.509 certificate stays valid."""

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from fedllm.errors import FedllmError


def not_after(path: Path) -> datetime:
    """The certificate's expiry time (UTC); a one-line error when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError) as err:
        raise FedllmError(f"cannot read certificate {path}: {err}") from None


def seconds_until_expiry(path: Path, now: datetime | None = None) -> float:
    """Seconds from `now` until the certificate expires (negative once it has)."""
    return (not_after(path) - (now or datetime.now(UTC))).total_seconds()

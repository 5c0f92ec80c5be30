"""Memory figures from `/proc`: process RSS and peak, system memory, PSI memory pressure."""

from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MICROSECONDS = 1e6


@dataclass(frozen=True)
class Pressure:
    """One PSI line: share of wall time stalled over 10 s and 60 s, and total stalled seconds."""

    avg10: float
    avg60: float
    total_seconds: float


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is missing or unreadable (no PSI, no cgroup)."""
    try:
        return path.read_text()
    except OSError:
        return None


def kib_fields(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    """`Name:   123 kB` lines of a `/proc` status or meminfo file, in bytes."""
    found: dict[str, int] = {}
    for line in (read_text(path) or "").splitlines():
        name, _, rest = line.partition(":")
        if name in names:
            found[name] = int(rest.split()[0]) * KIB
    return found


def process_memory(root: Path = Path("/")) -> tuple[int, int] | None:
    """(resident bytes, peak resident bytes) of this process, from VmRSS and VmHWM."""
    fields = kib_fields(root / "proc/self/status", ("VmRSS", "VmHWM"))
    if len(fields) < 2:
        return None
    return fields["VmRSS"], fields["VmHWM"]


def system_memory(root: Path = Path("/")) -> dict[str, int]:
    """MemAvailable and MemTotal in bytes, those present."""
    return kib_fields(root / "proc/meminfo", ("MemAvailable", "MemTotal"))


def read_pressure(path: Path) -> dict[str, Pressure]:
    """The `some` and `full` lines of a PSI file; empty when PSI is absent or disabled."""
    found: dict[str, Pressure] = {}
    for line in (read_text(path) or "").splitlines():
        kind, *pairs = line.split()
        fields = dict(pair.split("=", 1) for pair in pairs)
        found[kind] = Pressure(
            avg10=float(fields["avg10"]) / 100,
            avg60=float(fields["avg60"]) / 100,
            total_seconds=int(fields["total"]) / MICROSECONDS,
        )
    return found

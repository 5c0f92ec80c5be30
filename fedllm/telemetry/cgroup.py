"""The memory cgroup of this process, v2 or v1 layout: usage, limit, OOM kills, PSI file."""

import math
from dataclasses import dataclass
from pathlib import Path

from fedllm.telemetry.memory import read_text

MOUNT = Path("sys/fs/cgroup")
# v1 reports "no limit" as the largest page count in bytes (about 2**63).
UNLIMITED = 2**62
V2_FILES = ("memory.current", "memory.max", "memory.events")
V1_FILES = ("memory.usage_in_bytes", "memory.limit_in_bytes", "memory.oom_control")


@dataclass(frozen=True)
class CgroupMemory:
    """Memory charged to the cgroup, its limit (inf when none) and OOM kills inside it."""

    usage_bytes: int
    limit_bytes: float
    oom_kills: int | None


def cgroup_path(root: Path, controller: str) -> Path | None:
    """This process's cgroup for `controller` ("" is the v2 unified hierarchy)."""
    for line in (read_text(root / "proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(path.lstrip("/"))
    return None


def cgroup_dir(root: Path, mount: Path, controller: str) -> Path | None:
    """The process's cgroup directory; the mount itself when the path is not visible there."""
    relative = cgroup_path(root, controller)
    if relative is None or not mount.is_dir():
        return None
    return mount / relative if (mount / relative).is_dir() else mount


def v2_dir(root: Path) -> Path | None:
    """The cgroup v2 directory, when the unified hierarchy is mounted at /sys/fs/cgroup."""
    if not (root / MOUNT / "cgroup.controllers").is_file():
        return None
    return cgroup_dir(root, root / MOUNT, "")


def field(text: str | None, name: str) -> int | None:
    """`name N` from a flat-keyed file such as memory.events or memory.oom_control."""
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return None


def memory_cgroup(root: Path = Path("/")) -> CgroupMemory | None:
    """Usage, limit and OOM kills from memory.current/max/events (v2) or their v1 files."""
    directory, files = v2_dir(root), V2_FILES
    if directory is None:
        directory, files = cgroup_dir(root, root / MOUNT / "memory", "memory"), V1_FILES
    if directory is None:
        return None
    usage, limit, events = (read_text(directory / name) for name in files)
    if usage is None or limit is None:
        return None
    limit_bytes = math.inf if limit.strip() == "max" else float(limit)
    return CgroupMemory(
        usage_bytes=int(usage),
        limit_bytes=math.inf if limit_bytes >= UNLIMITED else limit_bytes,
        oom_kills=field(events, "oom_kill"),
    )


def pressure_file(root: Path = Path("/")) -> Path:
    """The cgroup's memory.pressure inside a v2 container, else the host's PSI file."""
    v2 = v2_dir(root)
    if v2 is not None and (v2 / "memory.pressure").is_file():
        return v2 / "memory.pressure"
    return root / "proc/pressure/memory"

"""How much memory this process may still take, and how pressed memory is, from /proc and /sys."""

import math
from dataclasses import dataclass
from pathlib import Path

from fedllm.telemetry.cgroup import MOUNT, cgroup_dir, field, memory_cgroup, pressure_file, v2_dir
from fedllm.telemetry.memory import read_pressure, read_text, system_memory


@dataclass(frozen=True)
class MemoryState:
    """Bytes usable before the cgroup limit or MemAvailable runs out, and signs of pressure."""

    available_bytes: float
    used_ratio: float  # working set / cgroup limit; 0 without a limit
    pressure: float  # PSI `some avg10`: share of the last 10 s some task stalled on memory


def inactive_file(root: Path) -> int:
    """Page cache charged to the cgroup that the kernel reclaims before an OOM kill."""
    directory, name = v2_dir(root), "inactive_file"
    if directory is None:
        directory = cgroup_dir(root, root / MOUNT / "memory", "memory")
        name = "total_inactive_file"  # v1 counts the whole subtree under this name
    if directory is None:
        return 0
    return field(read_text(directory / "memory.stat"), name) or 0


def memory_state(root: Path = Path("/")) -> MemoryState:
    """The tighter of the cgroup's room (limit - working set) and MemAvailable, with PSI."""
    available = float(system_memory(root).get("MemAvailable", math.inf))
    used_ratio = 0.0
    cgroup = memory_cgroup(root)
    if cgroup is not None and math.isfinite(cgroup.limit_bytes):
        working_set = max(0, cgroup.usage_bytes - inactive_file(root))
        available = min(available, cgroup.limit_bytes - working_set)
        used_ratio = working_set / cgroup.limit_bytes
    some = read_pressure(pressure_file(root)).get("some")
    return MemoryState(max(0.0, available), used_ratio, some.avg10 if some else 0.0)

"""How many torch threads a node can use: its CPU affinity, capped by its cgroup CPU quota.

torch sizes its pool from the host's cores, not from a container's quota: a node limited to
2 CPUs on a 64-core host would start 32 threads and spend its quota being throttled.
"""

import math
import os
from pathlib import Path

from fedllm.telemetry.cgroup import MOUNT, cgroup_dir, v2_dir
from fedllm.telemetry.memory import read_text


def _ancestors(directory: Path, mount: Path) -> list[Path]:
    """`directory` and its parents up to the cgroup mount: a parent's quota binds too."""
    chain = [directory]
    while chain[-1] != mount and mount in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _v2_quota(directory: Path) -> float | None:
    """`cpu.max` is `QUOTA PERIOD` in microseconds, or `max PERIOD` for no limit."""
    fields = (read_text(directory / "cpu.max") or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return int(fields[0]) / int(fields[1])


def _v1_quota(directory: Path) -> float | None:
    """`cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 means no limit."""
    quota = read_text(directory / "cpu.cfs_quota_us")
    period = read_text(directory / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def cpu_quota(root: Path = Path("/")) -> float | None:
    """CPUs this process's cgroup (or the tightest of its parents) may use; None when unlimited."""
    mount = root / MOUNT
    directory, read = v2_dir(root), _v2_quota
    if directory is None:
        mount = root / MOUNT / "cpu"
        directory, read = cgroup_dir(root, mount, "cpu"), _v1_quota
    if directory is None:
        return None
    quotas = [quota for path in _ancestors(directory, mount) if (quota := read(path)) is not None]
    return min(quotas, default=None)


def default_threads(root: Path = Path("/"), cpus: int | None = None) -> int:
    """Usable CPUs (affinity) capped by the quota rounded down: a partly usable CPU throttles.

    Rounding down keeps torch's synchronised worker threads from stalling at the end of
    every CFS period; a quota under one CPU still gets one thread.
    """
    available = cpus if cpus is not None else len(os.sched_getaffinity(0))
    quota = cpu_quota(root)
    if quota is not None:
        available = min(available, math.floor(quota + 1e-9))
    return max(1, available)

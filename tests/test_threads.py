"""Torch threads from the node's CPU quota: cgroup v2 `cpu.max`, v1 CFS quota, affinity."""

from pathlib import Path

import pytest

from supernode.threads import cpu_quota, default_threads


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def v2_root(tmp_path: Path, own: str, parent: str) -> Path:
    """A container in `kubepods/pod1/c1` whose pod (parent) and container have `cpu.max`."""
    return write(tmp_path, {
        "proc/self/cgroup": "0::/kubepods/pod1/c1\n",
        "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": parent,
        "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": own,
    })  # fmt: skip


def v1_root(tmp_path: Path, quota: str) -> Path:
    """A Docker container with a CFS quota on cgroup v1 (cpu and cpuacct co-mounted)."""
    return write(tmp_path, {
        "proc/self/cgroup": "5:cpu,cpuacct:/docker/4f2a\n4:memory:/docker/4f2a\n",
        "sys/fs/cgroup/cpu/docker/4f2a/cpu.cfs_quota_us": quota,
        "sys/fs/cgroup/cpu/docker/4f2a/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip


@pytest.mark.parametrize(
    ("own", "parent", "quota", "threads"),
    [
        ("max 100000\n", "max 100000\n", None, 16),
        ("200000 100000\n", "max 100000\n", 2.0, 2),
        ("max 100000\n", "150000 100000\n", 1.5, 1),  # the pod's limit binds the container
        ("400000 100000\n", "300000 100000\n", 3.0, 3),
        ("50000 100000\n", "max 100000\n", 0.5, 1),  # under one CPU still gets a thread
    ],
)
def test_cgroup_v2_quota(
    tmp_path: Path, own: str, parent: str, quota: float | None, threads: int
) -> None:
    root = v2_root(tmp_path, own, parent)
    assert cpu_quota(root) == quota
    assert default_threads(root, cpus=16) == threads


@pytest.mark.parametrize(("text", "threads"), [("-1\n", 16), ("250000\n", 2), ("100000\n", 1)])
def test_cgroup_v1_quota(tmp_path: Path, text: str, threads: int) -> None:
    assert default_threads(v1_root(tmp_path, text), cpus=16) == threads


def test_affinity_is_the_limit_without_a_cgroup(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path) is None
    assert default_threads(tmp_path, cpus=3) == 3
    assert default_threads(v1_root(tmp_path, "800000\n"), cpus=3) == 3

"""Every memory figure read from /proc and /sys, against fixture files of both cgroup layouts."""

import math
import shutil
from pathlib import Path

import pytest

from fedllm.telemetry.cgroup import CgroupMemory, memory_cgroup, pressure_file
from fedllm.telemetry.host import HostCollector
from fedllm.telemetry.memory import Pressure, process_memory, read_pressure, system_memory

FIXTURES = Path(__file__).parent / "fixtures"
V1, V2 = FIXTURES / "cgroup-v1", FIXTURES / "cgroup-v2"
V1_CGROUP = Path("sys/fs/cgroup/memory/docker/4f2a")
V2_CGROUP = Path("sys/fs/cgroup/system.slice/fedllm.service")
GIB = 2**30


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """A writable copy of the cgroup v1 layout."""
    return Path(shutil.copytree(V1, tmp_path / "v1"))


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    """A writable copy of the cgroup v2 layout."""
    return Path(shutil.copytree(V2, tmp_path / "v2"))


def test_process_rss_and_peak_in_bytes() -> None:
    assert process_memory(V2) == (1048576 * 1024, 2097152 * 1024)
    assert process_memory(V1) == (500000 * 1024, 600000 * 1024)


def test_system_memory_in_bytes() -> None:
    assert system_memory(V2) == {"MemTotal": 16384000 * 1024, "MemAvailable": 4096000 * 1024}


def test_cgroup_v2_usage_limit_and_oom_kills() -> None:
    assert memory_cgroup(V2) == CgroupMemory(usage_bytes=3 * GIB, limit_bytes=4 * GIB, oom_kills=2)


def test_cgroup_v1_usage_limit_and_oom_kills() -> None:
    assert memory_cgroup(V1) == CgroupMemory(
        usage_bytes=int(1.5 * GIB), limit_bytes=2 * GIB, oom_kills=1
    )


def test_unlimited_cgroups_have_an_infinite_limit(v1: Path, v2: Path) -> None:
    (v2 / V2_CGROUP / "memory.max").write_text("max\n")
    (v1 / V1_CGROUP / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_cgroup(v2) == CgroupMemory(3 * GIB, math.inf, oom_kills=2)
    assert memory_cgroup(v1) == CgroupMemory(int(1.5 * GIB), math.inf, oom_kills=1)


def test_v1_container_without_cgroup_namespace_reads_the_mount_root(v1: Path) -> None:
    """/proc/self/cgroup names the host's path, but the container sees its cgroup at the root."""
    mount = v1 / "sys/fs/cgroup/memory"
    for item in (v1 / V1_CGROUP).iterdir():
        item.rename(mount / item.name)
    shutil.rmtree(mount / "docker")
    assert memory_cgroup(v1) == memory_cgroup(V1)


def test_old_v1_kernel_without_oom_kill_count(v1: Path) -> None:
    (v1 / V1_CGROUP / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    assert memory_cgroup(v1) == CgroupMemory(int(1.5 * GIB), 2 * GIB, oom_kills=None)


def test_psi_in_a_v2_cgroup_comes_from_the_cgroup() -> None:
    assert pressure_file(V2) == V2 / V2_CGROUP / "memory.pressure"
    assert read_pressure(pressure_file(V2)) == {
        "some": Pressure(avg10=0.125, avg60=0.0825, total_seconds=45.0),
        "full": Pressure(avg10=0.04, avg60=0.025, total_seconds=12.5),
    }


def test_psi_under_v1_comes_from_proc() -> None:
    assert pressure_file(V1) == V1 / "proc/pressure/memory"
    assert read_pressure(pressure_file(V1))["full"] == Pressure(0.005, 0.0025, 1.0)


def test_v2_root_cgroup_has_no_memory_files(v2: Path) -> None:
    """At the root of the hierarchy (no cgroup namespace path) usage is not charged."""
    (v2 / "proc/self/cgroup").write_text("0::/\n")
    assert memory_cgroup(v2) is None
    assert pressure_file(v2) == v2 / "proc/pressure/memory"


def test_missing_sources_are_skipped(tmp_path: Path) -> None:
    assert process_memory(tmp_path) is None
    assert system_memory(tmp_path) == {}
    assert memory_cgroup(tmp_path) is None
    assert read_pressure(pressure_file(tmp_path)) == {}


def test_psi_disabled_in_the_kernel_reads_as_absent(tmp_path: Path) -> None:
    """With psi=0 the file exists but reading it fails (EOPNOTSUPP); a directory stands in."""
    (tmp_path / "proc/pressure/memory").mkdir(parents=True)
    assert read_pressure(pressure_file(tmp_path)) == {}


def series(root: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the exporter's host collector reports for a root file system, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in HostCollector([], root).collect()
        for sample in family.samples
    }


def test_host_series_in_base_units() -> None:
    found = series(V2)
    assert found[("fedllm_memory_available_bytes", ())] == 4096000 * 1024
    assert found[("fedllm_memory_total_bytes", ())] == 16384000 * 1024
    assert found[("fedllm_memory_pressure_ratio", (("kind", "full"), ("window", "60s")))] == 0.025
    assert found[("fedllm_memory_pressure_ratio", (("kind", "some"), ("window", "10s")))] == 0.125
    assert found[("fedllm_memory_pressure_stalled_seconds_total", (("kind", "some"),))] == 45.0
    assert found[("fedllm_cgroup_memory_usage_bytes", ())] == 3 * GIB
    assert found[("fedllm_cgroup_memory_limit_bytes", ())] == 4 * GIB
    assert found[("fedllm_cgroup_oom_kills_total", ())] == 2


def test_host_series_leave_out_missing_sources(tmp_path: Path) -> None:
    assert series(tmp_path) == {}
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text((V1 / "proc/meminfo").read_text())
    assert {name for name, _ in series(tmp_path)} == {
        "fedllm_memory_available_bytes",
        "fedllm_memory_total_bytes",
    }

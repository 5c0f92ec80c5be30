"""Choosing the micro-batch: free memory from fake cgroup v1/v2 trees, the fit, the controller."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fedllm.errors import FedllmError
from fedllm.settings import NodeSettings, build
from fedllm.telemetry.headroom import MemoryState, memory_state
from supernode.adaptation import Adaptation, is_out_of_memory
from supernode.microbatch import budget_bytes, choose, fit

MIB, GIB = 2**20, 2**30
MEMINFO = "MemTotal:       16777216 kB\nMemAvailable:    8388608 kB\n"  # 16 GiB, 8 GiB free
PSI = "some avg10={:.2f} avg60=1.00 avg300=0.50 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"  # noqa: E501


def write(root: Path, files: dict[str, str]) -> Path:
    """Lay out `files` (relative path -> text) under `root`."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def v2_tree(root: Path, limit: str, usage: int, inactive: int, avg10: float) -> Path:
    """A unified hierarchy with the process in /fedllm.slice/node-1 and its own PSI file."""
    group = "sys/fs/cgroup/fedllm.slice/node-1"
    return write(root, {
        "proc/self/cgroup": "0::/fedllm.slice/node-1\n",
        "proc/meminfo": MEMINFO,
        "sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n",
        f"{group}/memory.current": f"{usage}\n",
        f"{group}/memory.max": f"{limit}\n",
        f"{group}/memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        f"{group}/memory.stat": f"anon {usage - inactive}\ninactive_file {inactive}\n",
        f"{group}/memory.pressure": PSI.format(avg10),
    })  # fmt: skip


def v1_tree(root: Path, limit: int, usage: int, inactive: int, avg10: float) -> Path:
    """A v1 memory controller with the process in /docker/4f2a; PSI only host-wide."""
    group = "sys/fs/cgroup/memory/docker/4f2a"
    return write(root, {
        "proc/self/cgroup": "5:cpu,cpuacct:/docker/4f2a\n4:memory:/docker/4f2a\n",
        "proc/meminfo": MEMINFO,
        "proc/pressure/memory": PSI.format(avg10),
        f"{group}/memory.usage_in_bytes": f"{usage}\n",
        f"{group}/memory.limit_in_bytes": f"{limit}\n",
        f"{group}/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        f"{group}/memory.stat": f"cache {inactive}\ntotal_inactive_file {inactive}\n",
    })  # fmt: skip


def test_v2_room_is_the_limit_less_the_working_set(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, str(2 * GIB), usage=1200 * MIB, inactive=176 * MIB, avg10=12.5)
    state = memory_state(root)
    assert state == MemoryState(available_bytes=GIB, used_ratio=0.5, pressure=0.125)
    # 80% of 1 GiB at 100 MiB a row: 8 of the 16 rows at a time.
    assert choose(16, 100 * MIB, state.available_bytes * 0.8) == 8


def test_v1_room_counts_reclaimable_cache_as_free(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, GIB, usage=900 * MIB, inactive=100 * MIB, avg10=3.0)
    state = memory_state(root)
    assert state.available_bytes == 224 * MIB
    assert state.used_ratio == pytest.approx(800 / 1024)
    assert state.pressure == pytest.approx(0.03)
    assert choose(16, 100 * MIB, state.available_bytes) == 2


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_without_a_limit_memavailable_bounds_the_room(tmp_path: Path, layout: str) -> None:
    if layout == "v2":
        root = v2_tree(tmp_path, "max", usage=GIB, inactive=0, avg10=0.0)
    else:
        root = v1_tree(tmp_path, 9223372036854771712, usage=GIB, inactive=0, avg10=0.0)
    assert memory_state(root) == MemoryState(8 * GIB, 0.0, 0.0)


def test_a_tight_memavailable_wins_over_a_loose_limit(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, str(64 * GIB), usage=GIB, inactive=0, avg10=0.0)
    assert memory_state(root).available_bytes == 8 * GIB


def test_budget_keeps_the_margin_and_room_for_adamw_state(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, str(2 * GIB), usage=GIB, inactive=0, avg10=0.0)
    model = nn.Linear(1024, 1024, bias=False)  # 4 MiB of float32 weights to train
    budget = budget_bytes(model, torch.device("cpu"), margin=0.25, root=root)
    assert budget == 0.75 * GIB - 2 * 4 * MIB


def test_fit_measures_once_when_the_batch_fits() -> None:
    asked: list[bool] = []

    def row_bytes(checkpointing: bool) -> float:
        asked.append(checkpointing)
        return 10 * MIB

    assert fit(16, GIB, row_bytes).micro_batch == 16
    assert asked == [False]


def test_checkpointing_only_when_one_row_does_not_fit() -> None:
    costs = {False: 300 * MIB, True: 40 * MIB}
    fitted = fit(16, 256 * MIB, costs.__getitem__)
    assert (fitted.micro_batch, fitted.checkpointing, fitted.row_bytes) == (6, True, 40 * MIB)
    # Nothing fits even then: one row, and the adaptation handles what follows.
    assert fit(16, 10 * MIB, costs.__getitem__).micro_batch == 1


CALM, PRESSED = MemoryState(GIB, 0.1, 0.0), MemoryState(GIB, 0.1, 0.4)
FULL = MemoryState(GIB, 0.95, 0.0)


def test_pressure_halves_then_waits_out_the_psi_window() -> None:
    adapt = Adaptation(micro_batch=8, ceiling=8, threshold=0.1, calm_steps=3)
    adapt.observe(PRESSED)
    assert adapt.micro_batch == 4
    adapt.observe(PRESSED)  # same 10 s average: no second halving yet
    assert adapt.micro_batch == 4
    for _ in range(3):
        adapt.step_done(PRESSED)
    adapt.observe(FULL)  # cgroup almost full counts as pressure too
    assert (adapt.micro_batch, adapt.pressure_halvings, adapt.pressure_max) == (2, 2, 0.4)


def test_grows_back_by_doubling_after_calm_steps_up_to_the_fit() -> None:
    adapt = Adaptation(micro_batch=2, ceiling=6, calm_steps=2)
    for expected in (2, 4, 4, 6, 6, 6):
        adapt.step_done(CALM)
        assert adapt.micro_batch == expected
    assert adapt.growths == 2
    adapt.step_done(PRESSED)  # pressure resets the calm count
    adapt.step_done(CALM)
    assert adapt.calm == 1


def test_out_of_memory_halves_and_never_grows_back_to_the_failed_size() -> None:
    adapt = Adaptation(micro_batch=8, ceiling=8, calm_steps=1)
    assert adapt.out_of_memory()
    for _ in range(5):
        adapt.step_done(CALM)
    assert (adapt.micro_batch, adapt.oom_recoveries, adapt.fitted) == (4, 1, 8)
    adapt.micro_batch = 1
    assert not adapt.out_of_memory()


@pytest.mark.parametrize(
    ("err", "oom"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"), True),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_which_errors_are_out_of_memory(err: BaseException, oom: bool) -> None:
    assert is_out_of_memory(err) is oom


def test_invalid_margin_is_one_line() -> None:
    with pytest.raises(FedllmError, match=r"^invalid setting 'memory-margin': .*\(got 1\.5\)$"):
        build(NodeSettings, memory_margin=1.5)
    assert math.isclose(build(NodeSettings).memory_margin, 0.2)

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from fedllm.errors import FedllmError
from fedllm.rundir.checkpoint import (
    checkpoint_dir,
    completed_rounds,
    guard_fresh,
    load_last_checkpoint,
    prune,
    read_json,
    save_checkpoint,
)


def arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": torch.full((2, 2), value)})


def test_resume_takes_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    for server_round in (1, 2):
        save_checkpoint(tmp_path, server_round, arrays(server_round), {"metrics": {}})
    checkpoint_dir(tmp_path, 3).mkdir()  # a crash mid-write leaves an incomplete directory
    assert completed_rounds(tmp_path) == [1, 2]
    done, restored = load_last_checkpoint(tmp_path)
    assert done == 2
    np.testing.assert_array_equal(restored["w"].numpy(), np.full((2, 2), 2.0, dtype=np.float32))
    assert read_json(checkpoint_dir(tmp_path, 2) / "state.json", {})["round"] == 2


def test_fresh_runs_never_overwrite_checkpoints(tmp_path: Path) -> None:
    guard_fresh(tmp_path)
    save_checkpoint(tmp_path, 1, arrays(1.0), {})
    with pytest.raises(FedllmError, match="already holds checkpoints"):
        guard_fresh(tmp_path)


def test_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(FedllmError, match="nothing to resume"):
        load_last_checkpoint(tmp_path)


def test_prune_keeps_the_newest_and_the_best(tmp_path: Path) -> None:
    accuracies = {1: 0.6, 2: 0.9, 3: 0.7, 4: 0.75, 5: 0.8}
    for server_round, accuracy in accuracies.items():
        state = {"metrics": {"centralized": {"accuracy": accuracy}}}
        save_checkpoint(tmp_path, server_round, arrays(server_round), state)
    assert prune(tmp_path, keep_last=2) == [1, 3]
    assert completed_rounds(tmp_path) == [2, 4, 5]
    assert prune(tmp_path, keep_last=0) == []


def test_a_full_disk_leaves_earlier_checkpoints_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, 1, arrays(1.0), {})
    before = (checkpoint_dir(tmp_path, 1) / "adapter.safetensors").read_bytes()

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fedllm.rundir.checkpoint.save_safetensors", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, arrays(2.0), {})
    assert completed_rounds(tmp_path) == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-1"]
    assert (checkpoint_dir(tmp_path, 1) / "adapter.safetensors").read_bytes() == before

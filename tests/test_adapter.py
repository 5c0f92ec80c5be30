from pathlib import Path

import pytest
import torch

from fedllm.learning.adapter import (
    adapter_state,
    load_arrays,
    load_safetensors,
    save_safetensors,
    to_arrays,
)
from fedllm.learning.model import build_model, load_tokenizer, pick_device
from fedllm.settings import RunSettings


def make(model_dir: Path, seed: int) -> torch.nn.Module:
    run = RunSettings(model=str(model_dir), seed=seed)
    return build_model(run, load_tokenizer(run.model), pick_device("cpu"))


def test_only_adapter_and_head_travel(demo_assets: tuple[Path, Path]) -> None:
    model = make(demo_assets[0], seed=0)
    state = adapter_state(model)
    assert state and all("lora_" in name or ".score." in name for name in state)
    total = sum(param.numel() for param in model.parameters())
    assert sum(tensor.numel() for tensor in state.values()) < 0.05 * total


def test_round_trip_through_arrays_and_safetensors(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    source, target = make(demo_assets[0], seed=1), make(demo_assets[0], seed=2)
    before = adapter_state(target)
    save_safetensors(to_arrays(source), tmp_path / "adapter.safetensors")
    load_arrays(target, load_safetensors(tmp_path / "adapter.safetensors"))
    after, expected = adapter_state(target), adapter_state(source)
    assert any(not torch.equal(before[name], expected[name]) for name in expected)
    assert all(torch.equal(after[name], expected[name]) for name in expected)
    batch = {"input_ids": torch.tensor([[2, 3, 4, 5]]), "attention_mask": torch.ones(1, 4)}
    source.eval(), target.eval()
    assert torch.allclose(source(**batch).logits, target(**batch).logits)


def test_foreign_arrays_are_refused(demo_assets: tuple[Path, Path]) -> None:
    model = make(demo_assets[0], seed=0)
    arrays = to_arrays(model)
    del arrays[next(iter(arrays))]
    with pytest.raises(ValueError, match="adapter keys differ"):
        load_arrays(model, arrays)

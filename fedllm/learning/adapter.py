"""What travels between roles: the LoRA adapter and classification-head weights only."""

from pathlib import Path

import torch
from flwr.app import ArrayRecord
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """Trainable weights (LoRA matrices and `modules_to_save` head): a CPU copy."""
    state = get_peft_model_state_dict(model)
    return {name: tensor.detach().cpu().clone() for name, tensor in state.items()}


def to_arrays(model: PeftModel) -> ArrayRecord:
    """The model's adapter as a Flower ArrayRecord."""
    return ArrayRecord(adapter_state(model))


def load_arrays(model: PeftModel, arrays: ArrayRecord) -> None:
    """Put received adapter weights into the model; every expected key must be present."""
    load_state(model, arrays.to_torch_state_dict())


def load_state(model: PeftModel, state: dict[str, torch.Tensor]) -> None:
    """Load an adapter state dict, refusing one that misses or adds keys."""
    expected = set(adapter_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
    set_peft_model_state_dict(model, state)


def save_safetensors(arrays: ArrayRecord, path: Path) -> None:
    """Write an ArrayRecord as one safetensors file."""
    save_file(arrays.to_torch_state_dict(), str(path))


def load_safetensors(path: Path) -> ArrayRecord:
    """Read a safetensors adapter file back into an ArrayRecord."""
    return ArrayRecord(load_file(str(path)))

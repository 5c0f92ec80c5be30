"""Fit before training: the micro-batch that a measured trial step says fits the memory there is.

One forward+backward on the longest reviews measures the peak memory it adds; the cost is
taken as linear in rows times tokens and all of it is charged to the rows (which overestimates
larger micro-batches, the safe side). The run's batch size stays the effective batch size:
the rest is gradient accumulation (`supernode.train`).
"""

import contextlib
import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel

from fedllm.learning.batches import Encoded, PadBatch
from fedllm.telemetry.headroom import memory_state
from fedllm.telemetry.memory import process_memory
from supernode.adaptation import Adaptation
from supernode.site import Site

TRIAL_ROWS = 2
ADAMW_STATES = 2  # exp_avg and exp_avg_sq per trainable weight


@dataclass(frozen=True)
class Fit:
    """The chosen micro-batch, whether it needs gradient checkpointing, and what decided it."""

    micro_batch: int
    checkpointing: bool
    budget_bytes: float
    row_bytes: float  # measured peak growth of one row as wide as the longest review


def choose(batch_size: int, row_bytes: float, budget: float) -> int:
    """The most rows (up to the batch) whose measured cost fits `budget`; 0: not even one."""
    return min(batch_size, max(0, math.floor(budget / max(row_bytes, 1.0))))


def fit(batch_size: int, budget: float, row_bytes: Callable[[bool], float]) -> Fit:
    """Micro-batch for `budget`; `row_bytes(checkpointing)` measures one row's cost, with
    checkpointing switched on only when even one row does not fit without it."""
    cost = row_bytes(False)
    micro = choose(batch_size, cost, budget)
    if micro >= 1:
        return Fit(micro, False, budget, cost)
    cost = row_bytes(True)
    return Fit(max(1, choose(batch_size, cost, budget)), True, budget, cost)


def budget_bytes(model: nn.Module, device: torch.device, margin: float, root: Path) -> float:
    """Free memory less the safety margin and the optimizer state not yet allocated."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    else:
        free = int(memory_state(root).available_bytes)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = ADAMW_STATES * sum(p.numel() * p.element_size() for p in trainable)
    return free * (1 - margin) - optimizer


def longest_rows(encoded: Encoded, pad_id: int, rows: int = TRIAL_ROWS) -> dict[str, torch.Tensor]:
    """A batch of the `rows` longest reviews: the widest a training micro-batch can be."""
    order = np.argsort(encoded.lengths(), kind="stable")[-rows:]
    return PadBatch(pad_id)([encoded[int(index)] for index in order])


def release_freed_heap() -> None:
    """Give freed heap pages back to the OS, so the trial's RSS growth shows what it needs."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (Linux clear_refs "5"); return that RSS."""
    # Without it the peak keeps older highs: the cost is then overestimated, never under.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    figures = process_memory()
    return figures[0] if figures else 0


def trial_peak(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> float:
    """Peak bytes one forward+backward on `batch` adds; weights, gradients and RNG untouched."""
    batch = {key: value.to(device) for key, value in batch.items()}
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            release_freed_heap()
            before = reset_peak_rss()
        model.train()
        model(**batch).loss.backward()
        if cuda:
            peak = torch.cuda.max_memory_allocated(device)
        else:
            figures = process_memory()
            peak = figures[1] if figures else before
    model.zero_grad(set_to_none=True)
    return float(max(0, peak - before))


def enable_checkpointing(model: nn.Module) -> bool:
    """Recompute activations in backward instead of keeping them (non-reentrant: frozen
    embeddings need no gradient for it); False for a model that cannot."""
    if not isinstance(model, PeftModel | PreTrainedModel):
        return False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def fit_model(
    model: PeftModel,
    train: Encoded,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    margin: float,
    root: Path = Path("/"),
) -> Fit:
    """Measure a trial step on the longest reviews and fit the micro-batch to free memory."""
    trial = longest_rows(train, pad_id, min(TRIAL_ROWS, batch_size, len(train)))
    rows = len(trial["labels"])

    def row_bytes(checkpointing: bool) -> float:
        if checkpointing:
            enable_checkpointing(model)
        return trial_peak(model, trial, device) / rows

    return fit(batch_size, budget_bytes(model, device, margin, root), row_bytes)


def plan(site: Site) -> Adaptation | None:
    """The node's micro-batching for a round; None when `adapt-memory` is off or no data."""
    if not site.node.adapt_memory or len(site.train) == 0:
        return None
    pad_id, batch_size = int(site.tokenizer.pad_token_id), site.run.batch_size
    fitted = fit_model(
        site.model, site.train, pad_id, batch_size, site.device, site.node.memory_margin
    )
    return Adaptation(
        micro_batch=fitted.micro_batch,
        ceiling=fitted.micro_batch,
        checkpointing=fitted.checkpointing,
        threshold=site.node.memory_pressure,
        calm_steps=site.node.memory_calm_steps,
        budget_bytes=fitted.budget_bytes,
        row_bytes=fitted.row_bytes,
    )

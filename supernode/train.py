"""Local LoRA training on one node's examples, in micro-batches that fit memory.

An optimizer step covers one loader batch (the run's `batch-size`). Its rows run in micro-batches
whose losses are weighted by their share of the batch, so the summed gradient is the gradient of
the batch's mean loss however it is split. Gradients of finished micro-batches are kept off the
weights, so a micro-batch that runs out of memory is dropped whole and its rows redone smaller.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from flwr.app import MetricRecordValues
from torch import nn
from torch.utils.data import DataLoader

from fedllm.telemetry.headroom import MemoryState, memory_state
from supernode.adaptation import Adaptation, is_out_of_memory
from supernode.label_skew import adjusted_loss
from supernode.microbatch import enable_checkpointing


@dataclass
class TrainStats:
    """What one local training pass did."""

    loss: float
    examples: int
    tokens: int
    steps: int
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time: comparable on a busy machine
    memory: dict[str, MetricRecordValues] = field(default_factory=dict)  # micro-batching

    def metrics(self) -> dict[str, MetricRecordValues]:
        """Metric-record form, throughput included."""
        seconds = max(self.seconds, 1e-9)
        return {
            "train-loss": self.loss,
            "train-steps": self.steps,
            "train-seconds": self.seconds,
            "train-cpu-seconds": self.cpu_seconds,
            "examples-per-second": self.examples / seconds,
            "tokens-per-second": self.tokens / seconds,
            **self.memory,
        }


@dataclass
class Tally:
    """Running totals of one training pass, timed from its creation."""

    loss_sum: float = 0.0
    examples: int = 0
    tokens: int = 0
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)

    def add(self, batch: dict[str, torch.Tensor], loss: float) -> None:
        """One batch trained, at mean loss `loss`."""
        self.loss_sum += loss * len(batch["labels"])
        self.examples += len(batch["labels"])
        self.tokens += int(batch["attention_mask"].sum())

    def stats(self, memory: dict[str, MetricRecordValues] | None = None) -> TrainStats:
        """What the pass did, until now."""
        return TrainStats(
            loss=self.loss_sum / max(self.examples, 1),
            examples=self.examples,
            tokens=self.tokens,
            steps=self.steps,
            seconds=time.perf_counter() - self.started,
            cpu_seconds=time.process_time() - self.cpu_started,
            memory=memory or {},
        )


class Accumulator:
    """Gradient sums of completed micro-batches, held apart from `.grad`."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.sums: list[torch.Tensor | None] = [None] * len(params)

    def bank(self) -> None:
        """Move the gradients of a completed backward into the sums."""
        for index, param in enumerate(self.params):
            if param.grad is not None:
                total = self.sums[index]
                self.sums[index] = param.grad if total is None else total.add_(param.grad)
                param.grad = None

    def drop(self) -> None:
        """Forget what a failed backward left in `.grad`."""
        for param in self.params:
            param.grad = None

    def restore(self) -> None:
        """Put the sums in `.grad` for the optimizer, and start afresh."""
        for param, total in zip(self.params, self.sums, strict=True):
            param.grad = total
        self.sums = [None] * len(self.params)


def rows(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows `start:stop` of a right-padded batch, without padding columns only others needed."""
    part = {key: value[start:stop] for key, value in batch.items()}
    width = int(part["attention_mask"].sum(dim=1).max())
    return {key: value[:, :width] if value.dim() == 2 else value for key, value in part.items()}


def micro_step(
    model: nn.Module,
    part: dict[str, torch.Tensor],
    share: float,
    offset: torch.Tensor | None = None,
) -> float:
    """Forward and backward of one micro-batch, its loss weighted by `share` of the batch (on
    logits moved by `offset`, when given); a failure here frees the micro-batch's activations
    with this frame."""
    if offset is None:
        loss = model(**part).loss * share
    else:
        inputs = {key: value for key, value in part.items() if key != "labels"}
        loss = adjusted_loss(model(**inputs).logits, part["labels"], offset) * share
    loss.backward()
    return float(loss.detach())


def batch_gradient(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    grads: Accumulator,
    adaptation: Adaptation | None,
    probe: Callable[[], MemoryState],
    offset: torch.Tensor | None = None,
) -> float:
    """Bank the gradient of the batch's mean loss, micro-batch by micro-batch; return the loss."""
    total, done, loss_sum = len(batch["labels"]), 0, 0.0
    while done < total:
        size = total
        if adaptation is not None:
            adaptation.observe(probe())
            size = adaptation.micro_batch
        part = rows(batch, done, done + size)
        count = len(part["labels"])
        try:
            loss = micro_step(model, part, count / total, offset)
        except (RuntimeError, MemoryError) as err:
            if adaptation is None or not is_out_of_memory(err):
                raise
            grads.drop()
            if not adaptation.out_of_memory():  # one row failed: trade compute for memory
                if adaptation.checkpointing or not enable_checkpointing(model):
                    raise
                adaptation.checkpointing = True
            continue
        grads.bank()
        loss_sum += loss
        done += count
    return loss_sum


def train(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    lr: float,
    epochs: float,
    max_steps: int = 0,
    proximal_mu: float = 0.0,
    adaptation: Adaptation | None = None,
    probe: Callable[[], MemoryState] = memory_state,
    offset: torch.Tensor | None = None,
) -> TrainStats:
    """AdamW on the trainable weights for `max_steps` steps, or `epochs` passes when it is 0.

    With `proximal_mu > 0` the FedProx term mu/2 * ||w - w_global||^2 keeps the local
    weights near the ones the round started from; it is added once per optimizer step.
    With `offset` the loss reads logits plus it (`supernode.label_skew`).
    Without `adaptation` every batch runs whole and an out-of-memory error ends training.
    """
    trainable = [param for param in model.parameters() if param.requires_grad]
    anchor = [param.detach().clone() for param in trainable] if proximal_mu > 0 else []
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    grads = Accumulator(trainable)
    total_steps = max_steps or max(1, round(epochs * len(loader)))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    tally = Tally()
    while tally.steps < total_steps:
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            loss = batch_gradient(model, batch, grads, adaptation, probe, offset)
            if anchor:
                drift = [((p - a) ** 2).sum() for p, a in zip(trainable, anchor, strict=True)]
                proximal = proximal_mu / 2 * torch.stack(drift).sum()
                proximal.backward()
                grads.bank()
                loss += float(proximal.detach())
            grads.restore()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if adaptation is not None:
                adaptation.step_done(probe())
            tally.add(batch, loss)
            tally.steps += 1
            if tally.steps >= total_steps:
                break
    return tally.stats(adaptation.metrics() if adaptation is not None else None)

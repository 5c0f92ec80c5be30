"""Local LoRA training on one node's examples."""

import time
from dataclasses import dataclass

import torch
from flwr.app import MetricRecordValues
from torch import nn
from torch.utils.data import DataLoader


@dataclass
class TrainStats:
    """What one local training pass did."""

    loss: float
    examples: int
    tokens: int
    steps: int
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time: comparable on a busy machine

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
        }


def train(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    lr: float,
    epochs: float,
    max_steps: int = 0,
    proximal_mu: float = 0.0,
) -> TrainStats:
    """AdamW on the trainable weights for `max_steps` steps, or `epochs` passes when it is 0.

    With `proximal_mu > 0` the FedProx term mu/2 * ||w - w_global||^2 keeps the local
    weights near the ones the round started from.
    """
    trainable = [param for param in model.parameters() if param.requires_grad]
    anchor = [param.detach().clone() for param in trainable] if proximal_mu > 0 else []
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    total_steps = max_steps or max(1, round(epochs * len(loader)))
    model.train()
    loss_sum, examples, tokens, steps = 0.0, 0, 0, 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while steps < total_steps:
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            loss = model(**batch).loss
            if anchor:
                drift = sum(((p - a) ** 2).sum() for p, a in zip(trainable, anchor, strict=True))
                loss = loss + proximal_mu / 2 * drift
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch["labels"])
            examples += len(batch["labels"])
            tokens += int(batch["attention_mask"].sum())
            steps += 1
            if steps >= total_steps:
                break
    return TrainStats(
        loss=loss_sum / max(examples, 1),
        examples=examples,
        tokens=tokens,
        steps=steps,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )

"""Record-level differential privacy on a site: DP-SGD with opacus (per-example clipping + noise).

The recipe (chosen by `bench/dp_features.py`, reasons in docs/privacy.md): only a linear head
trains (`dp-params` head), on each layer's token mean side by side, at one norm per review
(`pooling` auto → stack), which frozen MiniLM turns into features a linear model reads well;
the encoder being frozen, those vectors are computed once (`supernode.pooled_features`) and each
noisy step costs a linear layer's. opacus adds noise of `noise * clip` to each *logical* batch's
sum, so batches are large (`dp-batch-size`: a whole site of up to 1,024 records), SGD with
momentum (Adam's per-value normalisation turns pure noise into full-size steps), 20 passes a
round. `dp-params` lora-b / lora train through the model in micro-batches of `batch-size`.
"""

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import switch_generator
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader

from fedllm.learning.batches import Encoded, PadBatch
from fedllm.learning.pooling import MeanPooledClassifier
from fedllm.settings import DpParams
from supernode.pooled_features import cached_features, pooled_classifier
from supernode.train import Tally, TrainStats, rows

MOMENTUM = 0.9


@dataclass(frozen=True)
class DpSgd:
    """How a site trains privately this round."""

    noise_multiplier: float
    clip: float
    sample_rate: float
    steps: int
    batch_size: int  # the loader's; opacus samples each record at rate 1 / batches per pass
    lr: float
    params: DpParams


def plan_noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends `epsilon` at `delta` over `steps` sampled steps, by
    opacus' PRV accountant: 7% less noise than RDP's bound at ε 8 over 60 full-batch steps."""
    # PRV takes log(1 - rate): -inf at rate 1, as meant; opacus' search warns of RDP orders
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order")
        noise = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="prv",
        )
    return float(noise)


def logical_batches(records: int, batch_size: int) -> int:
    """Logical batches per pass of a loader of `batch_size`: the inverse of opacus' rate."""
    return max(1, -(-records // max(1, batch_size)))


def is_trained(name: str, params: DpParams) -> bool:
    """Whether DP-SGD trains the adapter weight `name` under `params`."""
    if params == "head":
        return "lora_" not in name
    if params == "lora-b":
        return "lora_A" not in name
    return True


@contextmanager
def trained_only(model: nn.Module, params: DpParams) -> Iterator[None]:
    """Freeze the adapter weights `params` leaves out; restore every flag on exit."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for name, param in trainable.items():
        param.requires_grad_(is_trained(name, params))
    try:
        yield
    finally:
        for param in trainable.values():
            param.requires_grad_(True)


def noise_only_step(optimizer: DPOptimizer) -> None:
    """The step of an empty Poisson draw: no gradient, the same noise (what the RDP analysis
    assumes; there is no batch to run the model on)."""
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    for param in optimizer.params:
        noise = torch.normal(
            0.0, std, param.shape, device=param.device, generator=optimizer.generator
        )
        param.grad = noise / optimizer.expected_batch_size
    optimizer.original_optimizer.step()
    optimizer.original_optimizer.zero_grad(set_to_none=True)


def fresh_generator(device: torch.device | None = None) -> torch.Generator:
    """A generator on `device` seeded by the OS, not by the run's seed: every ClientApp seeds
    torch's global generator from the public `seed`, and noise or a batch draw that anyone could
    replay would protect nothing. (opacus' `secure_mode` needs torchcsprng, not installed: this
    is torch's own generator, unpredictable to the server but not a cryptographic one.) The noise
    is drawn where the weights are: a CPU generator cannot draw on CUDA."""
    generator = torch.Generator(device=device or torch.device("cpu"))
    generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
    return generator


def logical_step(
    model: nn.Module, optimizer: DPOptimizer, batch: dict[str, torch.Tensor], physical: int
) -> float:
    """One noisy step over a logical batch, run in micro-batches of `physical` rows; the loss."""
    total, loss_sum = len(batch["labels"]), 0.0
    for start in range(0, total, physical):
        part = rows(batch, start, start + physical)
        loss = model(**part).loss
        loss.backward()
        loss_sum += float(loss.detach()) * len(part["labels"])
        optimizer.signal_skip_step(do_skip=start + physical < total)
        optimizer.step()  # clips and banks the micro-batch; adds noise and steps on the last
        optimizer.zero_grad(set_to_none=True)
    return loss_sum / total


def make_private(
    module: nn.Module, loader: DataLoader, plan: DpSgd, device: torch.device
) -> tuple[GradSampleModule, DPOptimizer, DataLoader]:
    """opacus' per-example clipping, noise and Poisson draws for `module`'s trainable weights,
    with noise and draws no one can replay from the run's public seed."""
    trained = [param for param in module.parameters() if param.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=plan.lr, momentum=MOMENTUM)
    module.train()  # opacus refuses a model in evaluation mode
    with warnings.catch_warnings():  # opacus warns about its own secure-RNG default
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="prv")
        private, optimizer, draws = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.clip,
            poisson_sampling=True,
            noise_generator=fresh_generator(device),
        )
    draws = switch_generator(data_loader=draws, generator=fresh_generator())
    private.train()
    return private, optimizer, draws


def drawn(draws: DataLoader, optimizer: DPOptimizer, tally: Tally, steps: int) -> Iterator[Any]:
    """Poisson draws until `steps` noisy steps are counted in `tally`; an empty draw takes its
    noise-only step here, a non-empty one is yielded for the caller's step."""
    while tally.steps < steps:
        for batch in draws:
            labels = batch["labels"] if isinstance(batch, dict) else batch[-1]
            if len(labels) > 0:
                yield batch
            else:
                noise_only_step(optimizer)
            tally.steps += 1
            if tally.steps >= steps:
                return


def train_head(
    classifier: MeanPooledClassifier,
    records: Encoded,
    pad_id: int,
    device: torch.device,
    plan: DpSgd,
    physical: int,
    cache: Path | None,
) -> Tally:
    """DP-SGD on the linear head alone, over pooled features computed once (`pooled_features`)."""
    tally = Tally()
    features, tally.tokens = cached_features(classifier, records, pad_id, device, physical, cache)
    loader = DataLoader(features, batch_size=plan.batch_size)
    private, optimizer, draws = make_private(classifier.score, loader, plan, device)
    try:
        for pooled, labels in drawn(draws, optimizer, tally, plan.steps):
            pooled, labels = pooled.to(device), labels.to(device)
            loss = cross_entropy(private(pooled), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tally.loss_sum += float(loss.detach()) * len(labels)
            tally.examples += len(labels)
    finally:
        private.to_standard_module()
    return tally


def train_model(
    model: nn.Module,
    records: Encoded,
    pad_id: int,
    device: torch.device,
    plan: DpSgd,
    physical: int,
) -> Tally:
    """DP-SGD through the whole model, each logical batch in micro-batches of `physical` rows."""
    loader = DataLoader(records, batch_size=plan.batch_size, collate_fn=PadBatch(pad_id))
    tally = Tally()
    private, optimizer, draws = make_private(model, loader, plan, device)
    try:
        for batch in drawn(draws, optimizer, tally, plan.steps):
            batch = {key: value.to(device) for key, value in batch.items()}
            tally.add(batch, logical_step(private, optimizer, batch, physical))
    finally:
        private.to_standard_module()  # no opacus hooks left on the model the reply is read
    return tally


def train_private(
    model: nn.Module,
    records: Encoded,
    pad_id: int,
    device: torch.device,
    plan: DpSgd,
    physical: int,
    cache: Path | None = None,
) -> TrainStats:
    """SGD with momentum for `plan.steps` DP-SGD steps on Poisson batches of `records`: on
    pooled features (kept in `cache`) when only a mean-pooled head trains, else through the
    model."""
    classifier = pooled_classifier(model)
    with trained_only(model, plan.params):
        if plan.params == "head" and classifier is not None:
            tally = train_head(classifier, records, pad_id, device, plan, physical, cache)
        else:
            tally = train_model(model, records, pad_id, device, plan, physical)
    return tally.stats()

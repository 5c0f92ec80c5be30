"""Record-level differential privacy on a site: DP-SGD with opacus (per-example clipping + noise).

opacus computes per-example gradients of the trainable modules (the LoRA `Linear`s and the
classification head), clips each to `clip` and adds Gaussian noise of `noise * clip` per
step; batches are Poisson-sampled (rate batch-size / records), as the RDP accounting assumes.
"""

import os
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import switch_generator
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader

from supernode.train import Tally, TrainStats


@dataclass(frozen=True)
class DpSgd:
    """How a site trains privately this round."""

    noise_multiplier: float
    clip: float
    sample_rate: float
    steps: int


def plan_noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier that spends `epsilon` at `delta` over `steps` sampled steps."""
    return float(
        get_noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps
        )
    )


def noise_only_step(optimizer: DPOptimizer) -> None:
    """The step of an empty Poisson draw: no gradient, the same noise (what the RDP analysis
    assumes; opacus' collate hands back no batch to run the model on)."""
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    for param in optimizer.params:
        noise = torch.normal(
            0.0, std, param.shape, device=param.device, generator=optimizer.generator
        )
        param.grad = noise / optimizer.expected_batch_size
    optimizer.original_optimizer.step()


def fresh_generator() -> torch.Generator:
    """A generator seeded by the OS, not by the run's seed: every ClientApp seeds torch's global
    generator from the public `seed`, and noise or a batch draw that anyone could replay would
    protect nothing. (opacus' `secure_mode` needs torchcsprng, not installed: this is torch's
    Mersenne Twister, unpredictable to the server but not a cryptographic generator.)"""
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
    return generator


def train_private(
    model: nn.Module, loader: DataLoader, device: torch.device, lr: float, plan: DpSgd
) -> TrainStats:
    """AdamW for `plan.steps` DP-SGD steps on Poisson batches drawn from `loader`'s dataset."""
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    engine = PrivacyEngine(accountant="rdp")
    model.train()  # opacus refuses a model in evaluation mode
    with warnings.catch_warnings():  # opacus warns about its own secure-RNG default
        warnings.simplefilter("ignore")
        private, optimizer, batches = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.clip,
            poisson_sampling=True,
            noise_generator=fresh_generator(),
        )
    batches = switch_generator(data_loader=batches, generator=fresh_generator())
    private.train()
    tally = Tally()
    while tally.steps < plan.steps:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            if isinstance(batch, dict):
                batch = {key: value.to(device) for key, value in batch.items()}
                loss = private(**batch).loss
                loss.backward()
                optimizer.step()
                tally.add(batch, float(loss.detach()))
            else:  # an empty Poisson draw
                noise_only_step(optimizer)
            tally.steps += 1
            if tally.steps >= plan.steps:
                break
    private.to_standard_module()  # no opacus hooks left on the model the reply is read from
    return tally.stats()

"""Adapt while training: halve the micro-batch on out-of-memory or memory pressure, and grow it
back, one doubling at a time, after a run of calm optimizer steps."""

from dataclasses import dataclass, field

import torch
from flwr.app import MetricRecordValues

from fedllm.telemetry.headroom import MemoryState

# CPU allocation failures are plain RuntimeErrors; these are the words torch and glibc use.
OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA or CPU allocation failure (not a kernel OOM kill: that ends the process)."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and any(word in str(err).lower() for word in OOM_WORDS)


@dataclass
class Adaptation:
    """The micro-batch in use and what changed it.

    `ceiling` is the fitted micro-batch: growing back never goes beyond what the trial step
    says fits. Pressure is `pressed` at PSI `some avg10` >= `threshold` or a cgroup working set
    at >= `usage_limit` of the limit; `calm` below half the PSI threshold and 0.8 of the usage
    limit. A pressure halving is
    followed by `calm_steps` steps without another (PSI averages over 10 s, so it lags).
    """

    micro_batch: int
    ceiling: int
    checkpointing: bool = False
    threshold: float = 0.1
    usage_limit: float = 0.9
    calm_steps: int = 8
    budget_bytes: float = 0.0  # what the fit had to spend, and the measured cost of one row
    row_bytes: float = 0.0
    fitted: int = field(init=False)
    smallest: int = field(init=False)
    oom_recoveries: int = 0
    pressure_halvings: int = 0
    growths: int = 0
    pressure_max: float = 0.0
    usage_max: float = 0.0
    calm: int = 0
    cooldown: int = 0

    def __post_init__(self) -> None:
        self.fitted, self.smallest = self.ceiling, self.micro_batch

    def halve(self) -> bool:
        """Halve the micro-batch; False when it is already one row."""
        if self.micro_batch == 1:
            return False
        self.micro_batch //= 2
        self.smallest = min(self.smallest, self.micro_batch)
        self.calm = 0
        return True

    def out_of_memory(self) -> bool:
        """An allocation failed: halve, and never grow back to the size that failed (False
        when one row already failed)."""
        shrunk = self.halve()
        self.oom_recoveries += shrunk
        self.ceiling = min(self.ceiling, self.micro_batch)
        return shrunk

    def observe(self, state: MemoryState) -> None:
        """Before a micro-batch: halve for the rest of the step when memory is pressed."""
        self.pressure_max = max(self.pressure_max, state.pressure)
        self.usage_max = max(self.usage_max, state.used_ratio)
        pressed = state.pressure >= self.threshold or state.used_ratio >= self.usage_limit
        if pressed and self.cooldown == 0 and self.halve():
            self.pressure_halvings += 1
            self.cooldown = self.calm_steps

    def step_done(self, state: MemoryState) -> None:
        """After an optimizer step: count calm steps and double after `calm_steps` of them."""
        self.cooldown = max(0, self.cooldown - 1)
        calm = state.pressure < self.threshold / 2 and state.used_ratio < 0.8 * self.usage_limit
        self.calm = self.calm + 1 if calm else 0
        if self.calm >= self.calm_steps and self.micro_batch < self.ceiling:
            self.micro_batch = min(self.ceiling, 2 * self.micro_batch)
            self.growths += 1
            self.calm = 0

    def metrics(self) -> dict[str, MetricRecordValues]:
        """Reply-metric form."""
        return {
            "micro-batch": self.micro_batch,
            "micro-batch-fitted": self.fitted,
            "micro-batch-min": self.smallest,
            "gradient-checkpointing": int(self.checkpointing),
            "memory-oom-recoveries": self.oom_recoveries,
            "memory-pressure-halvings": self.pressure_halvings,
            "memory-growths": self.growths,
            "memory-pressure-max": self.pressure_max,
            "memory-usage-max": self.usage_max,
            "memory-budget-bytes": self.budget_bytes,
            "memory-row-bytes": self.row_bytes,
        }

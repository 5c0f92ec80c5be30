"""How a node's local training fitted itself to memory, as its ClientApp records it."""

from typing import Protocol

from prometheus_client import Counter

from fedllm.telemetry.metrics import RUN, gauge

MICRO_BATCH = gauge(
    "fedllm_node_micro_batch", "Micro-batch in use at the end of the last local training.", RUN
)
MICRO_BATCH_FITTED = gauge(
    "fedllm_node_micro_batch_fitted", "Micro-batch the trial step fitted to free memory.", RUN
)
CHECKPOINTING = gauge(
    "fedllm_node_gradient_checkpointing",
    "1 when the last local training recomputed activations in backward.",
    RUN,
)
BUDGET = gauge(
    "fedllm_node_memory_budget_bytes", "Memory the last fit could spend (after the margin).", RUN
)
PRESSURE_MAX = gauge(
    "fedllm_node_memory_pressure_max_ratio",
    "Highest PSI `some avg10` seen during the last local training.",
    RUN,
)
ADAPTATIONS = Counter(
    "fedllm_node_memory_adaptations",
    "Micro-batch changes during local training, by reason (oom, pressure, growth).",
    [*RUN, "reason"],
)


class MicroBatching(Protocol):
    """What adapting did (`supernode.adaptation.Adaptation` has this shape)."""

    micro_batch: int
    fitted: int
    checkpointing: bool
    budget_bytes: float
    pressure_max: float
    oom_recoveries: int
    pressure_halvings: int
    growths: int


def record_micro_batching(run_id: int, adapted: MicroBatching) -> None:
    """The micro-batch in use and fitted, checkpointing, budget, peak pressure, changes."""
    run = str(run_id)
    MICRO_BATCH.labels(run).set(adapted.micro_batch)
    MICRO_BATCH_FITTED.labels(run).set(adapted.fitted)
    CHECKPOINTING.labels(run).set(int(adapted.checkpointing))
    BUDGET.labels(run).set(adapted.budget_bytes)
    PRESSURE_MAX.labels(run).set(adapted.pressure_max)
    for reason, count in (
        ("oom", adapted.oom_recoveries),
        ("pressure", adapted.pressure_halvings),
        ("growth", adapted.growths),
    ):
        ADAPTATIONS.labels(run, reason).inc(count)

"""A node's local training, as its ClientApp records it."""

from collections.abc import Mapping
from typing import Protocol

from fedllm.telemetry import metrics


class LocalTraining(Protocol):
    """What one local training pass did (`supernode.train.TrainStats` has this shape)."""

    loss: float
    examples: int
    tokens: int
    steps: int
    seconds: float


def record_training(
    run_id: int, server_round: int, stats: LocalTraining, examples: Mapping[str, int]
) -> None:
    """Throughput, mean step time, loss and last round of a training pass; examples per split."""
    run = str(run_id)
    seconds = max(stats.seconds, 1e-9)
    metrics.EXAMPLES_PER_SECOND.labels(run).set(stats.examples / seconds)
    metrics.TOKENS_PER_SECOND.labels(run).set(stats.tokens / seconds)
    metrics.STEP_SECONDS.labels(run).set(stats.seconds / max(stats.steps, 1))
    metrics.NODE_TRAIN_LOSS.labels(run).set(stats.loss)
    metrics.LAST_ROUND.labels(run).set(server_round)
    for split, count in examples.items():
        metrics.PARTITION_EXAMPLES.labels(run, split).set(count)

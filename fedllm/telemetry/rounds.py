"""Run state, round progress and round results, as the ServerApp records them."""

import time
from typing import Any

from fedllm.telemetry import metrics

STATES = ("running", "finished", "failed")
# History sections and their metric names for accuracy, F1 and loss.
EVALUATIONS = {
    "centralized": ("accuracy", "f1", "loss"),
    "federated": ("eval-accuracy", "eval-f1", "eval-loss"),
}


class RunTelemetry:
    """One run's gauges and counters, labelled by run id and strategy."""

    def __init__(self, run_id: int, strategy: str, total_rounds: int) -> None:
        self.run = str(run_id)
        self.labels = (self.run, strategy)
        self.total_rounds = total_rounds
        self.mark = time.monotonic()
        metrics.ROUNDS_COMPLETED.labels(*self.labels)  # exists at 0 before the first round

    def state(self, state: str) -> None:
        """Mark the run `running`, `finished` or `failed`."""
        for name in STATES:
            metrics.RUN_STATE.labels(self.run, name).set(float(name == state))
        metrics.LAST_PROGRESS.labels(self.run).set_to_current_time()

    def begin(self, done: int) -> None:
        """Rounds start after `done` completed ones (0, or those of a resumed checkpoint)."""
        self.progress(done)
        self.mark = time.monotonic()

    def progress(self, done: int) -> None:
        """The round in progress after `done` completed ones, the last once all are done."""
        metrics.ROUND_CURRENT.labels(*self.labels).set(min(done + 1, self.total_rounds))
        metrics.LAST_PROGRESS.labels(self.run).set_to_current_time()

    def closed(self, record: dict[str, Any]) -> None:
        """A round's history record is complete (round 0 is the initial evaluation)."""
        server_round = int(record["round"])
        now = time.monotonic()
        if server_round > 0:
            metrics.ROUND_DURATION.labels(*self.labels).observe(now - self.mark)
            metrics.ROUNDS_COMPLETED.labels(*self.labels).inc()
        self.mark = now
        self.progress(server_round)
        trained = record.get("exchanges", {}).get("train", {}).get("nodes", [])
        for node in trained:  # each site's counters exist at 0 from its first round
            metrics.UPDATES_REJECTED.labels(*self.labels, node["site"])
            metrics.POLICY_REFUSALS.labels(*self.labels, node["site"])
        for rejected in record.get("rejected", []):
            metrics.UPDATES_REJECTED.labels(*self.labels, rejected["site"]).inc()
        for refused in record.get("refused", []):
            metrics.POLICY_REFUSALS.labels(*self.labels, refused["site"]).inc()
        for node in trained:
            if "dp-epsilon" in node:
                metrics.EPSILON.labels(*self.labels, node["site"]).set(node["dp-epsilon"])
        if "privacy" in record:
            metrics.EPSILON.labels(*self.labels, "all").set(record["privacy"]["epsilon"])
        if "train-loss" in record.get("train", {}):
            metrics.TRAIN_LOSS.labels(*self.labels).set(record["train"]["train-loss"])
        for evaluation, names in EVALUATIONS.items():
            values = record.get(evaluation, {})
            gauges = (metrics.ACCURACY, metrics.F1, metrics.EVAL_LOSS)
            for gauge, name in zip(gauges, names, strict=True):
                if name in values:
                    gauge.labels(*self.labels, evaluation).set(values[name])

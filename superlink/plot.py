"""`history.png`: accuracy and loss per round."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_history(rounds: list[dict[str, Any]], path: Path) -> None:
    """Plot centralized and federated accuracy and loss against the round number."""
    figure, (acc_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    series = {
        "centralized": ("centralized", "accuracy", "loss"),
        "federated": ("federated", "eval-accuracy", "eval-loss"),
    }
    for label, (group, acc_key, loss_key) in series.items():
        points = [(row["round"], row[group]) for row in rounds if row.get(group)]
        if not points:
            continue
        xs = [x for x, _ in points]
        acc_axis.plot(xs, [m[acc_key] for _, m in points], marker="o", label=label)
        loss_axis.plot(xs, [m[loss_key] for _, m in points], marker="o", label=label)
    train = [(row["round"], row["train"]["train-loss"]) for row in rounds if row.get("train")]
    if train:
        loss_axis.plot(*zip(*train, strict=True), marker="o", label="train (nodes)")
    for axis, title in ((acc_axis, "accuracy"), (loss_axis, "loss")):
        axis.set_xlabel("round")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

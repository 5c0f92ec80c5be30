"""`history.png`: accuracy, loss, sites replying and, with DP, ε spent, per round."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Label, history group, accuracy key, loss key.
EVALUATIONS = (
    ("server evaluation", "centralized", "accuracy", "loss"),
    ("federated evaluation (sites)", "federated", "eval-accuracy", "eval-loss"),
)


def epsilon_series(rounds: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """ε spent so far per round: per site (DP-SGD) and of the aggregate (site-level DP)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rounds:
        for node in row.get("exchanges", {}).get("train", {}).get("nodes", []):
            if "dp-epsilon" in node:
                series.setdefault(str(node["site"]), []).append((row["round"], node["dp-epsilon"]))
        if "privacy" in row:
            point = (row["round"], row["privacy"]["epsilon"])
            series.setdefault("aggregate (site-level DP)", []).append(point)
    return series


def plot_evaluations(rounds: list[dict[str, Any]], acc_axis: Axes, loss_axis: Axes) -> None:
    for label, group, acc_key, loss_key in EVALUATIONS:
        points = [(row["round"], row[group]) for row in rounds if row.get(group)]
        if points:
            xs = [x for x, _ in points]
            acc_axis.plot(xs, [m[acc_key] for _, m in points], marker="o", label=label)
            loss_axis.plot(xs, [m[loss_key] for _, m in points], marker="o", label=label)
    train = [(row["round"], row["train"]["train-loss"]) for row in rounds
             if "train-loss" in row.get("train", {})]  # fmt: skip
    if train:
        loss_axis.plot(*zip(*train, strict=True), marker="o", label="training (sites)")


def plot_sites(rounds: list[dict[str, Any]], axis: Axes) -> None:
    trained = [row for row in rounds if "nodes-sampled" in row or "nodes-replied" in row]
    xs = [row["round"] for row in trained]
    axis.bar(xs, [row.get("nodes-sampled", 0) for row in trained], color="lightgrey",
             label="sampled")  # fmt: skip
    axis.bar(xs, [row.get("nodes-replied", 0) for row in trained], width=0.5, label="replied")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))


def build_figure(rounds: list[dict[str, Any]]) -> Figure:
    """The figure `plot_history` saves."""
    epsilon = epsilon_series(rounds)
    titles = ["accuracy", "loss", "sites per round"] + (["ε spent so far"] if epsilon else [])
    figure, axes = plt.subplots(1, len(titles), figsize=(4.5 * len(titles), 4))
    plot_evaluations(rounds, axes[0], axes[1])
    plot_sites(rounds, axes[2])
    for site, points in epsilon.items():
        axes[3].plot(*zip(*points, strict=True), marker="o", label=site)
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xlabel("round")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_history(rounds: list[dict[str, Any]], path: Path) -> None:
    """Write the run's figure to `path` (PNG)."""
    figure = build_figure(rounds)
    figure.savefig(path, dpi=100)
    plt.close(figure)

"""history.png says what it shows: server evaluation, whole rounds, sites replying, ε per site."""

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from superlink.plot import build_figure, plot_history


def history(dp: bool) -> list[dict[str, Any]]:
    """Rows as the ServerApp records them (round 0: the initial adapter, evaluated only)."""
    rows: list[dict[str, Any]] = [{"round": 0, "centralized": {"accuracy": 0.5, "loss": 0.7}}]
    for rnd, replied in ((1, 3), (2, 2), (3, 3)):
        nodes = [{"site": f"site-{k}", "num-examples": 100} for k in range(replied)]
        if dp:
            for node in nodes:
                node["dp-epsilon"] = rnd * (1.0 + int(node["site"][-1]))
        rows.append({
            "round": rnd, "centralized": {"accuracy": 0.6 + rnd / 10, "loss": 0.6 - rnd / 10},
            "federated": {"eval-accuracy": 0.6, "eval-loss": 0.6}, "train": {"train-loss": 0.5},
            "nodes-sampled": 3, "nodes-replied": replied,
            "exchanges": {"train": {"seconds": 1.0, "nodes": nodes}},
        })  # fmt: skip
    return rows


@pytest.mark.parametrize("dp", [False, True])
def test_the_figure_names_what_it_shows(dp: bool) -> None:
    figure = build_figure(history(dp))
    axes = figure.axes
    titles = [axis.get_title() for axis in axes]
    assert titles[:3] == ["accuracy", "loss", "sites per round"]
    assert ("ε spent so far" in titles) is dp
    labels = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert "server evaluation" in labels and not any("centralized" in x for x in labels)
    figure.canvas.draw()
    for axis in axes:
        ticks = [
            tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]
        ]
        assert ticks and all(float(tick).is_integer() for tick in ticks)
    replied = [bar.get_height() for bar in axes[2].containers[1]]
    assert replied == [3, 2, 3]
    if dp:
        lines = {line.get_label(): list(line.get_ydata()) for line in axes[3].get_lines()}
        assert lines == {"site-0": [1.0, 2.0, 3.0], "site-1": [2.0, 4.0, 6.0], "site-2": [3.0, 9.0]}
    plt.close(figure)


def test_plot_history_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "history.png"
    plot_history(history(True), target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

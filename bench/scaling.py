"""Round time, bytes and SuperLink memory vs number of nodes and LoRA rank; a 100-site estimate.

Real federations (`fedllm up`, mutual TLS on loopback) of the tiny GPT-2 from
`fedllm demo-assets`: 2, 4 and 8 SuperNodes at rank 8, then ranks 4, 16 and 64 with 2 nodes.
Prints one JSON object; the estimate for 100 sites fine-tuning GPT-2 124M is computed from
GPT-2's real architecture config (no weights needed) and the per-node costs measured here.

    fedllm demo-assets runs/demo-assets
    python bench/scaling.py --model runs/demo-assets/model \
        --dataset runs/demo-assets/reviews.parquet --out bench/scaling.json
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import ROOT, commit, measure, now, parse_args, round_rows

MB = 1024 * 1024


def one_run(model: str, dataset: Path, examples: int, nodes: int, rank: int) -> dict[str, Any]:
    """One federation (no bare loop): steady-state round figures and memory peaks."""
    workdir = ROOT / "runs" / "bench-scaling"
    args = parse_args(["--model", model, "--dataset", str(dataset), "--examples", str(examples),
                       "--nodes", str(nodes), "--rounds", "2", "--lora-r", str(rank),
                       "--skip-bare", "--workdir", str(workdir)])  # fmt: skip
    measured = measure(args)
    rounds = round_rows(measured["fed"]["history"])
    last = rounds[-1]
    peaks = measured["fed"]["peaks"]
    node_trees = [
        peak["pss"] for role, peak in peaks.items() if ":" not in role and role != "superlink"
    ]
    per_node_round = nodes * args.rounds
    wire = measured["fed"]["wire-sent"] + measured["fed"]["wire-received"]
    return {
        "nodes": nodes,
        "lora_r": rank,
        "threads_per_node": args.threads,
        "adapter_bytes": measured["adapter_bytes"],
        "round_wall_s": last["round_wall_s"],
        "slowest_node_compute_s": last["slowest_node_compute_s"],
        "round_overhead_s": last["round_overhead_s"],
        "slowest_node_startup_s": last["slowest_node_startup_s"],
        "bytes_up_per_node_round": statistics.fmean(last["bytes_up"]),
        "bytes_down_per_node_round": statistics.fmean(last["bytes_down"]),
        "bytes_per_round_all_nodes": sum(last["bytes_up"]) + sum(last["bytes_down"])
        + sum(last["evaluate_bytes_down"]) + sum(last["evaluate_bytes_up"]),
        "wire_bytes_per_node_round": wire / per_node_round,
        "superlink_peak_rss_mb": peaks.get("superlink:flower-superlink", {}).get("rss", 0) / MB,
        "serverapp_peak_rss_mb": peaks.get("superlink:flwr-serverapp", {}).get("rss", 0) / MB,
        "node_tree_peak_pss_mb": statistics.fmean(node_trees) / MB if node_trees else None,
        "load_average": measured["load"],
    }  # fmt: skip


def record_bytes(shapes: dict[str, tuple[int, ...]], dtype: str) -> int:
    """Flower's payload size of an adapter with these tensors (npy headers and names included)."""
    import numpy as np
    from flwr.app import Array, ArrayRecord

    arrays = {name: Array(np.zeros(shape, dtype=dtype)) for name, shape in shapes.items()}
    return int(ArrayRecord(arrays).count_bytes())


def gpt2_adapter(rank: int = 8) -> dict[str, Any]:
    """Trainable tensors of GPT-2 124M with LoRA on `c_attn` + the 2-label head, from its config."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(num_labels=2, pad_token_id=50256)  # the defaults are GPT-2 124M's
    with torch.device("meta"):  # shapes only, no weights
        base = GPT2ForSequenceClassification(config)
        total = sum(p.numel() for p in base.parameters())
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=2 * rank,
                          target_modules=["c_attn"])  # fmt: skip
        model = get_peft_model(base, lora)
    shapes = {name: tuple(t.shape) for name, t in get_peft_model_state_dict(model).items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {
        "layers": config.n_layer,
        "hidden": config.n_embd,
        "base_parameters": total,
        "base_bytes_float32": total * 4,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "arrays": len(shapes),
        "adapter_bytes_float32": sum(p.numel() * 4 for p in trainable),
        "record_bytes_float32": record_bytes(shapes, "float32"),
        "record_bytes_16bit": record_bytes(shapes, "float16"),
    }


def demo_record_bytes(model: str) -> int:
    """Payload size of the measured runs' (tiny GPT-2, r=8) adapter arrays alone."""
    import torch

    from fedllm.learning.adapter import adapter_state
    from fedllm.learning.model import build_model, load_tokenizer
    from fedllm.settings import RunSettings

    run = RunSettings(model=str(Path(model).resolve()))
    state = adapter_state(build_model(run, load_tokenizer(run.model), torch.device("cpu")))
    return record_bytes({name: tuple(t.shape) for name, t in state.items()}, "float32")


def estimate(runs: list[dict[str, Any]], model: str, sites: int = 100) -> dict[str, Any]:
    """Bytes per round and SuperLink-side memory for `sites` GPT-2 124M nodes, r=8.

    Payload sizes are exact for GPT-2's arrays plus the metrics/config records measured here;
    memory extrapolates the growth measured from 2 to 8 nodes.
    """
    adapter = gpt2_adapter()
    measured = [run for run in runs if run["lora_r"] == 8]
    arrays = demo_record_bytes(model)
    metrics = statistics.fmean(run["bytes_up_per_node_round"] for run in measured) - arrays
    config = statistics.fmean(run["bytes_down_per_node_round"] for run in measured) - arrays
    up = adapter["record_bytes_float32"] + metrics
    up16 = adapter["record_bytes_16bit"] + metrics
    down = adapter["record_bytes_float32"] + config
    (n0, small), (n1, large) = sorted((run["nodes"], run) for run in measured)[:: len(measured) - 1]
    slope = (large["superlink_peak_rss_mb"] - small["superlink_peak_rss_mb"]) / (n1 - n0)
    replies_mb = sites * adapter["record_bytes_float32"] / MB
    serverapp_mb = small["serverapp_peak_rss_mb"] + adapter["base_bytes_float32"] / MB + replies_mb
    return {
        "sites": sites,
        "gpt2_124m_lora_r8": adapter,
        "bytes_up_per_node_round": up,
        "bytes_up_per_node_round_16bit": up16,
        "bytes_down_per_node_round_train": down,
        "bytes_per_round_all_sites": {
            "upload": sites * up,
            "upload_16bit": sites * up16,
            "download_train": sites * down,
            "download_train_and_federated_evaluation": 2 * sites * down,
        },
        "superlink_rss_mb_per_node_measured": slope,
        "superlink_rss_mb_estimate": small["superlink_peak_rss_mb"] + slope * (sites - n0),
        "serverapp_replies_mb": replies_mb,
        "serverapp_rss_mb_estimate": serverapp_mb,
        "notes": (
            "flower-superlink keeps messages and objects in SQLite (--database): replies pass "
            "through its disk, its RSS grows by the per-node figure measured here. The "
            "ServerApp holds every reply until it aggregates (sites x adapter) besides its own "
            "copy of the model for centralized evaluation; its measured tiny-model RSS is the "
            "base the GPT-2 weights and replies are added to."
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the tiny GPT-2 from fedllm demo-assets")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=800)
    parser.add_argument("--nodes", default="2,4,8")
    parser.add_argument("--ranks", default="4,16,64")
    parser.add_argument("--runs", type=Path, help="an earlier --out file: reuse its runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.runs:  # measured earlier: recompute the estimate only
        result = json.loads(args.runs.read_text())
    else:
        runs = [one_run(args.model, args.dataset, args.examples, int(n), 8)
                for n in args.nodes.split(",")]  # fmt: skip
        runs += [one_run(args.model, args.dataset, args.examples, 2, int(r))
                 for r in args.ranks.split(",")]  # fmt: skip
        result = {"runs": runs, "commit": commit(), "cpus": os.cpu_count(), "date": now()}
    result["estimate"] = estimate(result["runs"], args.model)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

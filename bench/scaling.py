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
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import ROOT, commit, measure, parse_args, round_rows

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


def gpt2_adapter(rank: int = 8) -> dict[str, int]:
    """Trainable tensors of GPT-2 124M with LoRA on `c_attn` + the 2-label head, from its config."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(num_labels=2, pad_token_id=50256)  # the defaults are GPT-2 124M's
    with torch.device("meta"):  # shapes only, no weights
        base = GPT2ForSequenceClassification(config)
        total = sum(p.numel() for p in base.parameters())
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=2 * rank,
                          target_modules=["c_attn"])  # fmt: skip
        model = get_peft_model(base, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {
        "layers": config.n_layer,
        "hidden": config.n_embd,
        "base_parameters": total,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "arrays": len(trainable),
        "adapter_bytes_float32": sum(p.numel() * 4 for p in trainable),
    }


def estimate(runs: list[dict[str, Any]], sites: int = 100) -> dict[str, Any]:
    """Bytes per round and SuperLink-side memory for `sites` GPT-2 124M nodes, r=8."""
    adapter = gpt2_adapter()
    size = adapter["adapter_bytes_float32"]
    # Measured framing: payload bytes over raw adapter bytes (npy headers, names, metrics).
    framing_up = statistics.fmean(
        run["bytes_up_per_node_round"] / run["adapter_bytes"] for run in runs
    )
    framing_down = statistics.fmean(
        run["bytes_down_per_node_round"] / run["adapter_bytes"] for run in runs
    )
    by_nodes = sorted((run["nodes"], run) for run in runs if run["lora_r"] == 8)
    (n0, small), (n1, large) = by_nodes[0], by_nodes[-1]
    superlink_per_node = (large["superlink_peak_rss_mb"] - small["superlink_peak_rss_mb"]) / (
        n1 - n0
    )
    serverapp_per_node = (large["serverapp_peak_rss_mb"] - small["serverapp_peak_rss_mb"]) / (
        n1 - n0
    )
    up = sites * size * framing_up
    down = sites * size * framing_down
    return {
        "sites": sites,
        "gpt2_124m_lora_r8": adapter,
        "upload_per_round_bytes": up,
        "upload_per_round_bytes_float16": up / 2,
        "download_per_round_bytes_train": down,
        "download_per_round_bytes_with_federated_evaluation": 2 * down,
        "serverapp_reply_memory_bytes": sites * size,
        "measured_superlink_rss_mb_per_node": superlink_per_node,
        "measured_serverapp_rss_mb_per_node": serverapp_per_node,
        "notes": (
            "The SuperLink keeps messages and their objects in SQLite (--database), so its RSS "
            "grows little with replies; the ServerApp holds every reply's arrays until it "
            "aggregates (sites x adapter bytes as numpy float32, plus one aggregate)."
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the tiny GPT-2 from fedllm demo-assets")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=800)
    parser.add_argument("--nodes", default="2,4,8")
    parser.add_argument("--ranks", default="4,16,64")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [
        one_run(args.model, args.dataset, args.examples, int(n), 8) for n in args.nodes.split(",")
    ]
    runs += [
        one_run(args.model, args.dataset, args.examples, 2, int(r)) for r in args.ranks.split(",")
    ]
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result = {"runs": runs, "estimate": estimate(runs), "commit": commit(),
              "cpus": os.cpu_count(), "date": date}  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

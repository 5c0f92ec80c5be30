"""Everything a node needs for one message: settings, model, and its tokenised train/val split."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import Context
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedllm.learning.batches import Encoded, encode_table
from fedllm.learning.data import is_local
from fedllm.learning.model import build_model, load_tokenizer, pick_device, tokens_read
from fedllm.settings import NodeSettings, RunSettings, from_flower_config
from supernode.threads import default_threads
from supernode.token_cache import VERSION, TokenCache, digest, file_digest, tokenizer_digest

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class Site:
    """One node's view of the run."""

    run: RunSettings
    node: NodeSettings
    device: torch.device
    tokenizer: PreTrainedTokenizerBase
    model: PeftModel
    train: Encoded
    val: Encoded
    cache_hit: bool = False


def open_site(context: Context) -> Site:
    """Read settings, set threads, load (or tokenise and cache) the local data, build the model."""
    run = from_flower_config(RunSettings, context.run_config)
    node = from_flower_config(NodeSettings, context.node_config)
    torch.set_num_threads(node.threads or default_threads())
    device = pick_device(node.device)
    tokenizer = load_tokenizer(run.model)
    splits, hit = TokenCache(cache_dir(node)).get(
        cache_key(run, node, tokenizer), lambda: tokenise(run, node, tokenizer)
    )
    model = build_model(run, tokenizer, device, node.quantization)
    return Site(run, node, device, tokenizer, model, splits["train"], splits["val"], hit)


def cache_dir(node: NodeSettings) -> Path:
    """`cache-dir` from the node config, else `fedllm-cache` in the node's Flower home."""
    if node.cache_dir is not None:
        return node.cache_dir.expanduser()
    return flower_home() / "fedllm-cache"


def flower_home() -> Path:
    """The node's Flower home: `FLWR_HOME`, else `~/.flwr`."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def data_identity(run: RunSettings, node: NodeSettings) -> dict[str, Any] | None:
    """What the node's examples depend on: file bytes (or hub id) and how they are split.

    None when the data file cannot be read: the uncached path then reports the problem.
    """
    split = {
        "partitioner": run.partitioner,
        "alpha": run.dirichlet_alpha,
        "partitions": node.num_partitions,
        "partition": node.partition_id,
    }
    try:
        if node.data_path is not None:
            return {"file": file_digest(node.data_path.expanduser())}
        if is_local(run.dataset):
            source = file_digest(Path(run.dataset).expanduser())
            return {"file": source, "eval-fraction": run.eval_fraction, **split}
    except OSError:
        return None
    return {"hub": run.dataset, **split}


def cache_key(
    run: RunSettings, node: NodeSettings, tokenizer: PreTrainedTokenizerBase
) -> str | None:
    """The token cache key: tokenizer, data, split and tokens read; None: do not cache."""
    identity = data_identity(run, node)
    if identity is None:
        return None
    return digest(
        VERSION, tokenizer_digest(tokenizer), tokens_read(run), identity, run.val_fraction, run.seed
    )


def tokenise(
    run: RunSettings, node: NodeSettings, tokenizer: PreTrainedTokenizerBase
) -> dict[str, Encoded]:
    """Read and split the node's data, then tokenise both splits (a cache miss)."""
    from fedllm.learning.partition import node_data  # datasets and flwr-datasets: only on a miss

    train, val = local_split(node_data(run, node), run.val_fraction, run.seed)
    return {
        "train": encode_table(train, tokenizer, tokens_read(run)),
        "val": encode_table(val, tokenizer, tokens_read(run)),
    }


def local_split(table: "Dataset", val_fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
    """Local train/validation split; validation gets at least one example when asked for."""
    n_val = max(1, int(len(table) * val_fraction)) if val_fraction > 0 else 0
    if n_val == 0 or n_val >= len(table):
        return table, table.select([])
    parts = table.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return parts["train"], parts["test"]

"""Everything a node needs for one message: settings, model, and its local train/val split."""

from dataclasses import dataclass

import torch
from datasets import Dataset
from flwr.app import Context
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedllm.model import build_model, load_tokenizer, pick_device
from fedllm.partition import node_data
from fedllm.settings import NodeSettings, RunSettings, from_flower_config


@dataclass
class Site:
    """One node's view of the run."""

    run: RunSettings
    node: NodeSettings
    device: torch.device
    tokenizer: PreTrainedTokenizerBase
    model: PeftModel
    train: Dataset
    val: Dataset


def open_site(context: Context) -> Site:
    """Read settings from run/node config, build the model, split the local data."""
    run = from_flower_config(RunSettings, context.run_config)
    node = from_flower_config(NodeSettings, context.node_config)
    if node.threads:
        torch.set_num_threads(node.threads)
    device = pick_device(node.device)
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, device, node.quantization)
    train, val = local_split(node_data(run, node), run.val_fraction, run.seed)
    return Site(run, node, device, tokenizer, model, train, val)


def local_split(table: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Local train/validation split; validation gets at least one example when asked for."""
    n_val = max(1, int(len(table) * val_fraction)) if val_fraction > 0 else 0
    if n_val == 0 or n_val >= len(table):
        return table, table.select([])
    parts = table.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return parts["train"], parts["test"]

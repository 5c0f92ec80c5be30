"""What a mean-pooled classifier's head reads, computed once per round for DP-SGD on the head.

With `dp-params=head` the encoder and its LoRA weights are frozen for the whole round, so each
record's pooled vector is fixed: one forward pass (no gradient) yields them all, and every
DP-SGD step then costs a linear layer's, which lets a site take large Poisson batches and many
noisy steps for less CPU than one plain pass (Tramèr & Boneh 2021: linear models on good
features beat end-to-end DP training at moderate ε). The vectors stay the same while the
encoder's weights do, which under head-only DP-SGD is the whole run: they are kept in the
node's cache directory beside its token ids, keyed by the records and those weights.
"""

import hashlib
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedllm.learning.batches import Encoded, PadBatch
from fedllm.learning.pooling import MeanPooledClassifier
from supernode.token_cache import ArrayCache

KEEP = 2  # pooled-feature entries per cache directory


def pooled_classifier(model: nn.Module) -> MeanPooledClassifier | None:
    """The mean-pooled classifier under a peft wrapper, or None for another head."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return inner if isinstance(inner, MeanPooledClassifier) else None


@torch.no_grad()
def features_key(classifier: MeanPooledClassifier, records: Encoded) -> str:
    """A hash of what the pooled vectors depend on: the records, the encoder's window and its
    weights (the pretrained ones by name, LoRA's by the change `B·A` makes to them).

    Not `A` and `B` apart: FedAvg's weighted mean of the sites' identical `A` rounds in the last
    bit, so the global `A` differs every round while `B` stays 0 under head-only DP-SGD and the
    features stay the same."""
    sha = hashlib.sha256(f"{classifier.config.name_or_path} {classifier.window}".encode())
    for array in (records.tokens, records.offsets, records.labels):
        sha.update(np.ascontiguousarray(array).tobytes())
    for name, module in classifier.backbone.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in sorted(module.lora_A):
                sha.update(f"{name} {adapter}".encode())
                # every LoRA layer type defines it; the LoraLayer base does not declare it
                delta = module.get_delta_weight(adapter)  # type: ignore[attr-defined]
                sha.update(delta.float().cpu().numpy().tobytes())
    return sha.hexdigest()[:32]


def cached_features(
    classifier: MeanPooledClassifier,
    records: Encoded,
    pad_id: int,
    device: torch.device,
    batch_size: int,
    cache: Path | None,
) -> tuple[TensorDataset, int]:
    """`pooled_features`, read from `cache` when the same records and weights made them."""
    if cache is None:
        return pooled_features(classifier, records, pad_id, device, batch_size)
    store, key = ArrayCache(cache, "pooled", KEEP), features_key(classifier, records)
    stored = store.load_arrays(key)
    if stored is not None and {"features", "labels", "tokens"} <= set(stored):
        vectors = torch.from_numpy(stored["features"]), torch.from_numpy(stored["labels"])
        return TensorDataset(*vectors), int(stored["tokens"])
    dataset, tokens = pooled_features(classifier, records, pad_id, device, batch_size)
    features, labels = (tensor.numpy() for tensor in dataset.tensors)
    store.save_arrays(key, {"features": features, "labels": labels, "tokens": np.array(tokens)})
    return dataset, tokens


@torch.no_grad()
def pooled_features(
    classifier: MeanPooledClassifier,
    records: Encoded,
    pad_id: int,
    device: torch.device,
    batch_size: int,
) -> tuple[TensorDataset, int]:
    """Each record's pooled vector (on CPU) with its label, and the tokens read."""
    loader = DataLoader(records, batch_size=batch_size, collate_fn=PadBatch(pad_id))
    was_training, tokens = classifier.training, 0
    classifier.eval()  # no dropout: the same vector every step, as the head sees it at serving
    features, labels = [], []
    try:
        for batch in loader:
            mask = batch["attention_mask"].to(device)
            features.append(classifier.features(batch["input_ids"].to(device), mask).float().cpu())
            labels.append(batch["labels"])
            tokens += int(mask.sum())
    finally:
        classifier.train(was_training)
    return TensorDataset(torch.cat(features), torch.cat(labels)), tokens

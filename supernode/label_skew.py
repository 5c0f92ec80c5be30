"""Logit adjustment for a site whose labels are skewed (Menon et al. 2021; FedLC, Zhang et al.
2022).

Under a Dirichlet split a site may hold mostly, or only, one label; trained on plain cross
entropy its adapter learns that label's prior, and FedAvg of such sites swings from round to
round. Training on `logits + strength * log(local prior)` lets the prior be explained by the
offset instead of the weights, so each site fits what a balanced site would: the model serves
raw logits. Balanced labels give a constant offset, which cross entropy ignores. A site holding one
label only is not helped: every step points the same way, and AdamW's per-value normalisation turns
the smaller adjusted gradient into full-size steps all the same.
"""

import numpy as np
import torch
from torch.nn.functional import cross_entropy

from fedllm.learning.model import NUM_LABELS


def logit_offset(labels: np.ndarray, strength: float) -> torch.Tensor | None:
    """`strength * log` of the labels' frequencies (one pseudo-count each, so a label the site
    lacks stays finite); None when `strength` is 0."""
    if strength <= 0:
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=NUM_LABELS)[:NUM_LABELS]
    prior = (counts + 1.0) / (counts.sum() + NUM_LABELS)
    return torch.as_tensor(strength * np.log(prior), dtype=torch.float32)


def adjusted_loss(logits: torch.Tensor, labels: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of the offset logits."""
    return cross_entropy(logits.float() + offset.to(logits.device), labels)

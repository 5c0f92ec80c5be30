"""A classifier on the mean of a model's token states, for any architecture.

Hugging Face's sequence-classification heads read one token: BERT's `[CLS]` through its
pretrained pooler, GPT-2's last token. `mean` averages the real tokens' last hidden states (what
sentence encoders such as MiniLM are trained to produce); `layers` averages them over every
layer as well; `stack` sets each layer's mean side by side (hidden size times layers values), at one
norm per review: what DP-SGD trains by default (docs/privacy.md, bench/dp-features-128.json).
"""

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize, pad
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

# Poolings the mean-pooled classifier reads: the last layer's token mean; the token mean
# averaged over layers; each layer's token mean side by side, scaled to one norm per review.
MEAN_POOLINGS = ("mean", "layers", "stack")
# The norm of each `stack` vector: every record's head gradient then has one bound, and no
# layer's scale drowns the others'. A map of each record alone, so it costs no privacy. 5 suits
# `dp-lr` 2; norms 2 and 10 read no better in a probe not kept as a bench.
FEATURE_NORM = 5.0


def mean_of_tokens(
    states: torch.Tensor, attention_mask: torch.Tensor, owner: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean of each row's hidden states over its real (unmasked) tokens; with `owner`
    (the review each row is a window of), over every window of each review."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    sums, counts = (states * mask).sum(dim=1), mask.sum(dim=1)
    if owner is not None:
        reviews = int(owner.max()) + 1 if len(owner) else 0
        sums = sums.new_zeros(reviews, sums.shape[1]).index_add_(0, owner, sums)
        counts = counts.new_zeros(reviews, 1).index_add_(0, owner, counts)
    return sums / counts.clamp(min=1.0)


def stacked_means(
    layers: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    owner: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each layer's token mean side by side, scaled to `FEATURE_NORM` per row (per review
    with `owner`)."""
    means = [mean_of_tokens(states, attention_mask, owner) for states in layers]
    stacked = torch.cat(means, dim=-1)
    return normalize(stacked.float(), dim=-1).to(stacked.dtype) * FEATURE_NORM


def windows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Right-padded rows cut into windows of `window` tokens, one row each, and the row each
    came from (None: rows as they are, when `window` is 0 or covers them). Windows holding
    no token are dropped, so a short review costs one window."""
    rows, length = input_ids.shape
    if window <= 0 or length <= window:
        return input_ids, attention_mask, None
    cut = -(-length // window) * window - length
    ids = pad(input_ids, (0, cut)).reshape(-1, window)
    mask = pad(attention_mask, (0, cut)).reshape(-1, window)
    owner = torch.arange(rows, device=input_ids.device).repeat_interleave(ids.shape[0] // rows)
    kept = mask.sum(dim=1) > 0
    kept[:: ids.shape[0] // rows] = True  # every review keeps one window, even an empty one
    return ids[kept], mask[kept], owner[kept]


class MeanPooledClassifier(nn.Module):
    """`backbone` (a model without head) → mean of its token states (`pooling`: see
    `MEAN_POOLINGS`) → linear `score`.

    `config` is the backbone's, so peft picks the architecture's LoRA targets, and `score`
    is one of the head names peft's sequence classification trains and saves.
    """

    def __init__(
        self, backbone: PreTrainedModel, num_labels: int, pooling: str, window: int = 0
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.pooling = pooling
        self.window = window  # tokens the encoder reads at once; 0: a review in one pass
        width = backbone.config.hidden_size
        if pooling == "stack":
            width *= backbone.config.num_hidden_layers
        self.score = nn.Linear(width, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads: one vector per row, its tokens averaged over all its windows."""
        ids, mask, owner = windows(input_ids, attention_mask, self.window)
        output = self.backbone(
            input_ids=ids, attention_mask=mask, output_hidden_states=self.pooling != "mean"
        )
        if self.pooling == "mean":
            return mean_of_tokens(output.last_hidden_state, mask, owner)
        layers = output.hidden_states[1:]  # each block's output; [0] is the embeddings'
        if self.pooling == "layers":
            return mean_of_tokens(sum(layers) / len(layers), mask, owner)
        return stacked_means(layers, mask, owner)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: object,  # peft passes generation-era arguments the classifier does not use
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        features = self.features(input_ids, attention_mask)
        logits = self.score(features.to(self.score.weight.dtype))  # bf16 states of a 4-bit model
        loss = None if labels is None else cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

"""A classifier on the mean of a model's token states, for any architecture.

Hugging Face's sequence-classification heads read one token: BERT's `[CLS]` through its
pretrained pooler, GPT-2's last token. `mean` averages the real tokens' last hidden states (what
sentence encoders such as MiniLM are trained to produce); `layers` averages them over every
layer as well; `stack` sets each layer's mean side by side (hidden size times layers values), at one
norm per review: what DP-SGD trains by default (docs/privacy.md, bench/dp-features-128.json).
"""

import torch
from torch import nn
from torch.nn.functional import cross_entropy, normalize
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

# Poolings the mean-pooled classifier reads: the last layer's token mean; the token mean
# averaged over layers; each layer's token mean side by side, scaled to one norm per review.
MEAN_POOLINGS = ("mean", "layers", "stack")
# The norm of each `stack` vector: every record's head gradient then has one bound, and no
# layer's scale drowns the others'. A map of each record alone, so it costs no privacy. 5 suits
# `dp-lr` 2; norms 2 and 10 read no better in a probe not kept as a bench.
FEATURE_NORM = 5.0


def mean_of_tokens(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's hidden states over its real (unmasked) tokens."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def stacked_means(layers: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
    """Each layer's token mean side by side, scaled to `FEATURE_NORM` per row."""
    stacked = torch.cat([mean_of_tokens(states, attention_mask) for states in layers], dim=-1)
    return normalize(stacked.float(), dim=-1).to(stacked.dtype) * FEATURE_NORM


class MeanPooledClassifier(nn.Module):
    """`backbone` (a model without head) → mean of its token states (`pooling`: see
    `MEAN_POOLINGS`) → linear `score`.

    `config` is the backbone's, so peft picks the architecture's LoRA targets, and `score`
    is one of the head names peft's sequence classification trains and saves.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int, pooling: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.pooling = pooling
        width = backbone.config.hidden_size
        if pooling == "stack":
            width *= backbone.config.num_hidden_layers
        self.score = nn.Linear(width, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads: one vector per row."""
        output = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=self.pooling != "mean",
        )
        if self.pooling == "mean":
            return mean_of_tokens(output.last_hidden_state, attention_mask)
        layers = output.hidden_states[1:]  # each block's output; [0] is the embeddings'
        if self.pooling == "layers":
            return mean_of_tokens(sum(layers) / len(layers), attention_mask)
        return stacked_means(layers, attention_mask)

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

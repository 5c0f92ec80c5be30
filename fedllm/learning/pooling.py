"""A classifier on the mean of a model's token states, the representation sentence encoders
(MiniLM, sentence-transformers) are trained to produce, for any architecture.

Hugging Face's sequence-classification heads read one token: BERT's `[CLS]` through its
pretrained pooler, GPT-2's last token. A linear head on the mean of the real tokens' last
hidden states is what DP-SGD trains best on (bench/privacy.py, docs/privacy.md).
"""

import torch
from torch import nn
from torch.nn.functional import cross_entropy
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


def mean_of_tokens(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's hidden states over its real (unmasked) tokens."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MeanPooledClassifier(nn.Module):
    """`backbone` (a model without head) → mean of its token states → linear `score`.

    `config` is the backbone's, so peft picks the architecture's LoRA targets, and `score`
    is one of the head names peft's sequence classification trains and saves.
    """

    def __init__(self, backbone: PreTrainedModel, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.score = nn.Linear(backbone.config.hidden_size, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads: one vector per row."""
        output = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return mean_of_tokens(output.last_hidden_state, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: object,  # peft passes generation-era arguments the classifier does not use
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.score(self.features(input_ids, attention_mask))
        loss = None if labels is None else cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

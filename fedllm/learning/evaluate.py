"""Accuracy, F1 and loss of the classifier on labelled batches."""

import torch
from flwr.app import MetricRecordValues
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> dict[str, MetricRecordValues]:
    """Mean loss, accuracy and F1 (positive class = 1) over every example in `loader`."""
    model.eval()
    loss_sum, correct, examples = 0.0, 0, 0
    true_pos = false_pos = false_neg = 0
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        output = model(**batch)
        labels = batch["labels"]
        predicted = output.logits.argmax(dim=-1)
        loss_sum += float(output.loss) * len(labels)
        examples += len(labels)
        correct += int((predicted == labels).sum())
        true_pos += int(((predicted == 1) & (labels == 1)).sum())
        false_pos += int(((predicted == 1) & (labels == 0)).sum())
        false_neg += int(((predicted == 0) & (labels == 1)).sum())
    if examples == 0:
        return {"loss": 0.0, "accuracy": 0.0, "f1": 0.0, "num-examples": 0}
    f1_denominator = 2 * true_pos + false_pos + false_neg
    return {
        "loss": loss_sum / examples,
        "accuracy": correct / examples,
        "f1": 2 * true_pos / f1_denominator if f1_denominator else 0.0,
        "num-examples": examples,
    }

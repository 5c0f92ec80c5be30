"""Classify reviews with a run's final adapter."""

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedllm.errors import FedllmError
from fedllm.model import load_base, load_tokenizer

LABELS = ("negative", "positive")


def load_classifier(run_dir: Path) -> tuple[PeftModel, PreTrainedTokenizerBase, int]:
    """Base model + the run's final adapter, its tokenizer and max length."""
    final = run_dir / "final"
    if not (final / "adapter_config.json").is_file():
        raise FedllmError(f"no final adapter in {run_dir}: was the run finished?")
    settings = json.loads((run_dir / "run.json").read_text())
    tokenizer = load_tokenizer(str(final))
    base = load_base(settings["model"], int(tokenizer.pad_token_id))
    model = PeftModel.from_pretrained(base, final)
    model.eval()
    return model, tokenizer, int(settings["max_length"])


@torch.no_grad()
def predict(run_dir: Path, texts: list[str], batch_size: int = 16) -> list[tuple[str, float]]:
    """(label, probability of that label) for each text."""
    model, tokenizer, max_length = load_classifier(run_dir)
    results: list[tuple[str, float]] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        probabilities = model(**batch).logits.softmax(dim=-1)
        for row in probabilities:
            label = int(row.argmax())
            results.append((LABELS[label], float(row[label])))
    return results

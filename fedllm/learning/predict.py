"""Classify reviews with a run's final adapter."""

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from fedllm.errors import FedllmError
from fedllm.learning.model import load_base, load_tokenizer, pooling_of, tokens_read, window_of
from fedllm.settings import RunSettings

LABELS = ("negative", "positive")


def load_classifier(run_dir: Path) -> tuple[PeftModel, PreTrainedTokenizerBase, int]:
    """Base model + the run's final adapter, its tokenizer and the tokens it reads a review."""
    final = run_dir / "final"
    if not (final / "adapter_config.json").is_file():
        raise FedllmError(f"no final adapter in {run_dir}: was the run finished?")
    settings = json.loads((run_dir / "run.json").read_text())
    tokenizer = load_tokenizer(str(final))
    run = RunSettings(**settings)
    pad = int(tokenizer.pad_token_id)
    base = load_base(run.model, pad, pooling=pooling_of(run), window=window_of(run))
    model = PeftModel.from_pretrained(base, final)
    model.eval()
    return model, tokenizer, tokens_read(run)


def read_reviews(path: Path) -> list[str]:
    """The file's lines, split at `\\n` only, as `wc -l` counts them.

    A last line without `\\n` counts too; a `\\r` before `\\n` is dropped. `str.splitlines()`
    would also break at characters real reviews contain (U+0085, U+2028, form feed), and
    line numbers would no longer match the file's.
    """
    if not path.is_file():
        raise FedllmError(f"file not found: {path}")
    try:
        with path.open(encoding="utf-8", newline="\n") as lines:
            return [line.removesuffix("\n").removesuffix("\r") for line in lines]
    except UnicodeDecodeError as err:
        raise FedllmError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


@torch.no_grad()
def predict(
    run_dir: Path, texts: list[str], batch_size: int = 16
) -> list[tuple[str, float] | None]:
    """(label, probability of that label) for each text; blank texts are not scored (None)."""
    model, tokenizer, max_length = load_classifier(run_dir)
    scored = [index for index, text in enumerate(texts) if text.strip()]
    results: list[tuple[str, float] | None] = [None] * len(texts)
    for start in range(0, len(scored), batch_size):
        rows = scored[start : start + batch_size]
        batch = tokenizer(
            [texts[index] for index in rows],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        probabilities = model(**batch).logits.softmax(dim=-1)
        for index, row in zip(rows, probabilities, strict=True):
            label = int(row.argmax())
            results[index] = (LABELS[label], float(row[label]))
    return results

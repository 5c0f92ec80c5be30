"""Tokenised mini-batches from a `text`,`label` table."""

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase


def make_loader(
    table: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
) -> DataLoader:
    """Tokenise once, pad per batch; evaluation batches are length-sorted to pad less."""
    encoded = tokenizer(list(table["text"]), truncation=True, max_length=max_length)
    rows = [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(
            encoded["input_ids"], encoded["attention_mask"], table["label"], strict=True
        )
    ]
    if not shuffle:
        rows.sort(key=lambda row: len(row["input_ids"]))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        rows,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )

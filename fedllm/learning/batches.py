"""Tokenised reviews and their mini-batches: padded per batch, similar lengths batched together."""

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    import datasets

# Training batches are drawn from windows of this many batches sorted by length: batches
# stay random in content and order while padding drops (see `LengthBuckets`).
WINDOW = 16


@dataclass(frozen=True, eq=False)
class Encoded(Dataset[tuple[np.ndarray, int]]):
    """Token ids of reviews, flat (`tokens[offsets[i]:offsets[i + 1]]` is review i), and labels."""

    tokens: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]], int(self.labels[index])

    def lengths(self) -> np.ndarray:
        """Tokens per review."""
        return np.diff(self.offsets)

    def select(self, indices: Sequence[int] | np.ndarray) -> "Encoded":
        """The reviews at `indices`, in that order."""
        rows = [self[int(index)][0] for index in indices]
        return pack(rows, self.labels[np.asarray(indices, dtype=np.int64)])


def pack(rows: Sequence[Sequence[int] | np.ndarray], labels: Sequence[int] | np.ndarray) -> Encoded:
    """Ragged token-id rows and labels as one flat `Encoded`."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(row) for row in rows])
    flat = itertools.chain.from_iterable(rows)
    tokens = np.fromiter(flat, dtype=np.int32, count=int(offsets[-1]))
    return Encoded(tokens, offsets, np.asarray(labels, dtype=np.int64).reshape(-1))


def encode(
    texts: Sequence[str],
    labels: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> Encoded:
    """Tokenise (truncating to `max_length`) without padding: batches pad themselves."""
    if len(texts) == 0:  # the tokenizer fails on an empty list (val-fraction 0: no validation)
        return pack([], labels)
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return pack(ids, labels)


def encode_table(
    table: "datasets.Dataset", tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Encoded:
    """`encode` a `text`,`label` table."""
    return encode(table["text"], table["label"], tokenizer, max_length)


class LengthBuckets(Sampler[list[int]]):
    """Random batches of similar length, a new draw on every pass.

    Each pass shuffles all examples, cuts them into windows of `window` batches, sorts each
    window by length and cuts it into batches, then shuffles the batch order. A batch pads to
    its longest review, so grouping similar lengths wastes less compute on padding, while
    batches still mix reviews from the whole shuffled window (a window of 1 batch is a plain
    shuffle).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, window: int = WINDOW):
        self.lengths = lengths
        self.batch_size = batch_size
        self.window = max(1, window)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.rng.permutation(len(self.lengths))
        span = self.window * self.batch_size
        size, cut = self.batch_size, []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            cut += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        for index in self.rng.permutation(len(cut)):
            yield cut[index].tolist()


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches in length order: the least padding, order does not matter."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class PadBatch:
    """Collate `(ids, label)` rows into right-padded tensors as wide as the longest row."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
        width = max((len(ids) for ids, _ in rows), default=0)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (ids, _) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
            attention_mask[row, : len(ids)] = 1
        labels = torch.tensor([label for _, label in rows], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(
    encoded: Encoded,
    pad_id: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    window: int = WINDOW,
) -> DataLoader:
    """Training batches (`shuffle`: length-bucketed, reshuffled every pass) or evaluation ones."""
    sampler = (
        LengthBuckets(encoded.lengths(), batch_size, seed, window)
        if shuffle
        else sorted_batches(encoded.lengths(), batch_size)
    )
    return DataLoader(encoded, batch_sampler=sampler, collate_fn=PadBatch(pad_id))


def make_loader(
    table: "datasets.Dataset",
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
) -> DataLoader:
    """Tokenise a table and batch it (see `batches`)."""
    encoded = encode_table(table, tokenizer, max_length)
    return batches(encoded, int(tokenizer.pad_token_id), batch_size, shuffle, seed)

"""Dynamic padding and length-bucketed batches."""

import numpy as np

from fedllm.cli.demo import synthetic_reviews, tiny_tokenizer
from fedllm.learning.batches import LengthBuckets, PadBatch, batches, encode, pack

PAD = 0


def varied(count: int = 400, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(range(1, int(length) + 1)) for length in rng.integers(3, 200, count)]


def test_a_batch_pads_to_its_longest_row_and_masks_the_padding() -> None:
    encoded = pack([[5, 6, 7], [8], [9, 10]], [1, 0, 1])
    batch = PadBatch(PAD)([encoded[index] for index in range(3)])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, PAD, PAD], [9, 10, PAD]]
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 1, 2]
    assert batch["labels"].tolist() == [1, 0, 1]


def test_every_example_once_per_pass_and_a_new_order_each_pass() -> None:
    lengths = np.array([len(row) for row in varied()])
    sampler = LengthBuckets(lengths, batch_size=16, seed=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 25
    for drawn in (first, second):
        assert sorted(index for batch in drawn for index in batch) == list(range(400))
    assert first != second
    assert first == list(LengthBuckets(lengths, batch_size=16, seed=3))  # reproducible


def test_bucketing_pads_far_less_than_a_plain_shuffle() -> None:
    lengths = np.array([len(row) for row in varied()])

    def padding(window: int) -> int:
        drawn = LengthBuckets(lengths, batch_size=16, seed=0, window=window)
        return sum(int((lengths[batch].max() - lengths[batch]).sum()) for batch in drawn)

    assert padding(16) < 0.2 * padding(1)


def test_loader_from_a_tokenizer() -> None:
    reviews = synthetic_reviews(50)
    tokenizer = tiny_tokenizer()
    encoded = encode(reviews["text"], reviews["label"], tokenizer, max_length=8)
    assert encoded.lengths().max() == 8
    assert encoded.labels.tolist() == reviews["label"].tolist()
    train = list(batches(encoded, PAD, batch_size=16, shuffle=True, seed=1))
    assert sum(len(batch["labels"]) for batch in train) == 50
    evaluation = list(batches(encoded, PAD, batch_size=16, shuffle=False))
    widths = [batch["input_ids"].shape[1] for batch in evaluation]
    assert widths == sorted(widths)


def test_select_keeps_rows_and_labels_together() -> None:
    encoded = pack([[1], [2, 2], [3, 3, 3]], [0, 1, 0])
    picked = encoded.select([2, 0])
    assert [picked[index][0].tolist() for index in range(2)] == [[3, 3, 3], [1]]
    assert picked.labels.tolist() == [0, 0]


def test_no_reviews_encode_to_an_empty_split() -> None:
    """val-fraction 0 leaves a node no validation reviews; its ClientApp once failed on them."""
    empty = encode([], [], tiny_tokenizer(), max_length=8)
    assert len(empty) == 0 and list(batches(empty, PAD, batch_size=4, shuffle=False)) == []

"""The demo's synthetic reviews: learnable from their words, not from one word or one place."""

from collections import Counter

import pytest

from fedllm.cli.demo import NEGATIVE, POSITIVE, synthetic_reviews


@pytest.fixture(scope="module")
def reviews() -> list[tuple[list[str], int]]:
    table = synthetic_reviews(4000, seed=3)
    return [(text.split(), int(label)) for text, label in zip(table.text, table.label, strict=True)]


def test_the_label_is_what_most_sentiment_words_say(reviews: list[tuple[list[str], int]]) -> None:
    for words, label in reviews:
        positive = sum(word in POSITIVE for word in words)
        negative = sum(word in NEGATIVE for word in words)
        assert (positive > negative) == bool(label), words
    assert Counter(label for _, label in reviews) == {0: 2000, 1: 2000}


def test_no_single_word_gives_the_label(reviews: list[tuple[list[str], int]]) -> None:
    labels_with: dict[str, set[int]] = {}
    for words, label in reviews:
        for word in words:
            labels_with.setdefault(word, set()).add(label)
    assert all(labels == {0, 1} for labels in labels_with.values())


def test_the_first_word_is_a_poor_guess(reviews: list[tuple[list[str], int]]) -> None:
    """The best rule on the first word alone (its majority label) stays far from the demo's 0.9."""
    by_first: dict[str, Counter[int]] = {}
    for words, label in reviews:
        by_first.setdefault(words[0], Counter())[label] += 1
    best = sum(max(counts.values()) for counts in by_first.values()) / len(reviews)
    assert best < 0.7

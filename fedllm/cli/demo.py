"""Offline demo assets: a tiny GPT-2 with its own tokenizer, and synthetic labelled reviews.

They let a federation run end to end with no hub access (smoke tests, CI, first contact).
"""

import random
from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

POSITIVE = ["great", "wonderful", "moving", "brilliant", "superb", "delightful", "charming"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "painful"]
NEUTRAL = [
    "the", "film", "movie", "plot", "actor", "scene", "story", "was", "and", "a", "with",
    "director", "music", "ending", "cast", "it", "really", "quite", "this", "of",
]  # fmt: skip
EOS = "<|endoftext|>"
UNK = "<unk>"


def synthetic_reviews(count: int, seed: int = 0) -> pd.DataFrame:
    """Balanced reviews whose label is the sentiment most of their sentiment words carry.

    Two to four words of the review's sentiment and, in half the reviews, one of the other
    sentiment, at random places among neutral words: no single word, and no position, tells
    the label; counting the sentiment words does.
    """
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = index % 2
        words = rng.choices(NEUTRAL, k=rng.randint(6, 14))
        cues, contrary = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        sentiment = rng.choices(cues, k=rng.randint(2, 4)) + rng.choices(contrary, k=index // 2 % 2)
        for word in sentiment:
            words.insert(rng.randrange(len(words) + 1), word)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the demo vocabulary, GPT-2 style (no pad token)."""
    vocab = {token: index for index, token in enumerate([EOS, UNK, *NEUTRAL, *POSITIVE, *NEGATIVE])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, unk_token=UNK)


def write_tiny_gpt2(target: Path, seed: int = 0) -> Path:
    """Save a 2-layer, 128-wide GPT-2 and its tokenizer where `from_pretrained` finds them."""
    import torch

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=128,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def write_demo_assets(target: Path, reviews: int = 4000, seed: int = 0) -> tuple[Path, Path]:
    """Write `model/` and `reviews.parquet` under `target`; return both paths."""
    target.mkdir(parents=True, exist_ok=True)
    model_dir = write_tiny_gpt2(target / "model", seed)
    data_file = target / "reviews.parquet"
    synthetic_reviews(reviews, seed).to_parquet(data_file, index=False)
    return model_dir, data_file

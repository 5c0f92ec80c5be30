"""Logit adjustment: what a site with skewed labels trains on (tiny GPT-2, offline)."""

import numpy as np
import pytest
import torch
from torch.nn.functional import cross_entropy

from fedllm.cli.demo import write_tiny_gpt2
from fedllm.learning.batches import batches, encode
from fedllm.learning.model import build_model, load_tokenizer
from fedllm.settings import RunSettings, build
from supernode.label_skew import adjusted_loss, logit_offset
from supernode.train import train

CPU = torch.device("cpu")


def test_offset_is_the_log_prior_with_one_pseudo_count() -> None:
    offset = logit_offset(np.array([0] * 6 + [1] * 2), 1.0)
    assert offset is not None
    assert torch.allclose(offset, torch.log(torch.tensor([7 / 10, 3 / 10])))
    lacking = logit_offset(np.zeros(640, dtype=np.int64), 2.0)
    assert lacking is not None and torch.isfinite(lacking).all()
    assert lacking[1] < lacking[0] < 0
    assert logit_offset(np.array([0, 1]), 0.0) is None


def test_balanced_labels_change_nothing() -> None:
    logits, labels = torch.randn(8, 2), torch.randint(0, 2, (8,))
    offset = logit_offset(np.array([0, 1] * 50), 1.0)
    assert offset is not None
    assert torch.allclose(adjusted_loss(logits, labels, offset), cross_entropy(logits, labels))


PLAIN, ADJUSTED = np.log(3.0), np.log(3.0) - np.log(49 / 17)


@pytest.mark.parametrize(("strength", "expected"), [(0.0, PLAIN), (1.0, ADJUSTED)])
def test_a_skewed_site_learns_the_balanced_posterior(
    tmp_path_factory: pytest.TempPathFactory, strength: float, expected: float
) -> None:
    """Three negatives to one positive of one and the same text: plain cross entropy fits the
    site's prior (a margin of log 3 for negative); with the adjustment the offset explains the
    prior (48 + 1 to 16 + 1) and the model stays all but undecided, as a balanced site would."""
    model_dir = write_tiny_gpt2(tmp_path_factory.mktemp("tiny"))
    run = build(RunSettings, model=str(model_dir), seed=3, lora_dropout=0.0)
    tokenizer = load_tokenizer(run.model)
    labels = [0, 0, 0, 1] * 16
    records = encode(["a film I saw"] * len(labels), labels, tokenizer, 16)
    model = build_model(run, tokenizer, CPU)
    loader = batches(records, int(tokenizer.pad_token_id), 64, shuffle=True, seed=0)
    train(model, loader, CPU, lr=1e-2, epochs=60, offset=logit_offset(records.labels, strength))
    model.eval()
    with torch.no_grad():
        logits = model(**next(iter(loader))).logits
    margin = float((logits[:, 0] - logits[:, 1]).mean())
    assert margin == pytest.approx(expected, abs=0.25)

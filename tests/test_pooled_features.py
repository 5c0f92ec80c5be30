"""The mean-pooled classifier DP-SGD trains on, and its features kept between rounds."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from peft import PeftModel

from fedllm.learning.adapter import adapter_state, load_arrays, to_arrays
from fedllm.learning.batches import encode
from fedllm.learning.model import (
    build_model,
    load_base,
    load_tokenizer,
    pooling_of,
    tokens_read,
    window_of,
)
from fedllm.learning.pooling import FEATURE_NORM, MeanPooledClassifier, mean_of_tokens
from fedllm.settings import RunSettings
from supernode import pooled_features
from supernode.pooled_features import cached_features, pooled_classifier

CPU = torch.device("cpu")


def test_auto_pooling_is_the_stacked_layer_means_under_dp_sgd_only() -> None:
    assert pooling_of(RunSettings(dp="sgd")) == "stack"
    assert pooling_of(RunSettings(dp="server", dp_noise=1.0)) == "model"
    assert pooling_of(RunSettings()) == "model"
    assert pooling_of(RunSettings(pooling="mean")) == "mean"
    assert pooling_of(RunSettings(dp="sgd", pooling="model")) == "model"


def test_dp_sgd_on_frozen_features_reads_four_windows_of_each_review() -> None:
    assert tokens_read(RunSettings(dp="sgd", max_length=64)) == 256
    assert window_of(RunSettings(dp="sgd", max_length=64)) == 64
    assert tokens_read(RunSettings(dp="sgd", dp_params="lora", max_length=64)) == 64
    assert tokens_read(RunSettings(max_length=64)) == 64 and window_of(RunSettings()) == 0
    assert tokens_read(RunSettings(pooling="mean", review_windows=2, max_length=64)) == 128


def test_windows_average_every_token_each_read_in_its_own_window(
    demo_assets: tuple[Path, Path],
) -> None:
    """A review longer than the window is read window by window (each alone, from position 0)
    and its tokens averaged together; a review within one window reads as without windows."""
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    texts = ["a fine film with a plot that holds and actors who care", "dull"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    length, window = int(mask[0].sum()), 4
    assert length > 2 * window and int(mask[1].sum()) <= window
    pad = int(tokenizer.pad_token_id)
    windowed = load_base(str(model_dir), pad, pooling="mean", window=window)
    assert isinstance(windowed, MeanPooledClassifier)
    parts = [ids[:1, start : start + window] for start in range(0, length, window)]
    states = [windowed.backbone(input_ids=part).last_hidden_state[0] for part in parts]
    expected = torch.cat(states).mean(dim=0)
    read = windowed.features(ids, mask)
    assert torch.allclose(read[0], expected, atol=1e-5)
    whole = mean_of_tokens(windowed.backbone(input_ids=ids, attention_mask=mask)[0], mask)
    assert not torch.allclose(read[0], whole[0], atol=1e-3)  # context stops at each window
    assert torch.allclose(read[1], whole[1], atol=1e-5)


def test_the_mean_ignores_padding() -> None:
    states = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_of_tokens(states, mask)
    assert torch.equal(pooled[0], states[0, :2].mean(dim=0))
    assert torch.equal(pooled[1], states[1].mean(dim=0))


def test_each_pooling_reads_the_blocks_it_names(demo_assets: tuple[Path, Path]) -> None:
    """mean: the last block; layers: every block averaged; stack: every block side by side,
    scaled to FEATURE_NORM per review."""
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    batch = tokenizer(["a fine film", "dull and far too long"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pad = int(tokenizer.pad_token_id)
    mean, layers, stack = (
        load_base(str(model_dir), pad, pooling=kind) for kind in ("mean", "layers", "stack")
    )
    assert isinstance(mean, MeanPooledClassifier) and isinstance(layers, MeanPooledClassifier)
    assert isinstance(stack, MeanPooledClassifier)
    states = mean.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    blocks = states.hidden_states[1:]
    assert len(blocks) == mean.config.num_hidden_layers
    averaged = mean_of_tokens(torch.stack(blocks).mean(dim=0), mask)
    assert torch.allclose(layers.features(ids, mask), averaged, atol=1e-6)
    assert torch.allclose(mean.features(ids, mask), mean_of_tokens(blocks[-1], mask))
    assert not torch.allclose(averaged, mean_of_tokens(blocks[-1], mask))
    side_by_side = torch.cat([mean_of_tokens(block, mask) for block in blocks], dim=-1)
    stacked = stack.features(ids, mask)
    assert stack.score.in_features == stacked.shape[-1] == side_by_side.shape[-1]
    assert torch.allclose(stacked.norm(dim=-1), torch.full((2,), FEATURE_NORM))
    scale = side_by_side.norm(dim=-1, keepdim=True) / FEATURE_NORM
    assert torch.allclose(stacked * scale, side_by_side, atol=1e-5)


def test_a_saved_mean_pooled_adapter_classifies_alike_when_loaded(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    """`fedllm predict` rebuilds the same classifier from run.json's pooling."""
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    model = build_model(RunSettings(model=str(model_dir), dp="sgd"), tokenizer, CPU)
    assert isinstance(pooled_classifier(model), MeanPooledClassifier)
    with torch.no_grad():
        model.base_model.model.score.modules_to_save["default"].weight.normal_()
    model.save_pretrained(tmp_path)
    pad = int(tokenizer.pad_token_id)
    base = load_base(str(model_dir), pad, pooling="stack")
    loaded = PeftModel.from_pretrained(base, tmp_path)
    batch = tokenizer(["a fine film", "dull and far too long"], padding=True, return_tensors="pt")
    model.eval()
    loaded.eval()
    assert torch.allclose(model(**batch).logits, loaded(**batch).logits)


def fedavg_of_identical_sites(model: PeftModel, sites: int) -> None:
    """Load Flower's FedAvg of `sites` equal replies; the mean's rounding must move some `A`."""
    state = adapter_state(model)
    reply = RecordDict({"arrays": to_arrays(model), "metrics": MetricRecord({"n": 4000})})
    mean = aggregate_arrayrecords([reply] * sites, "n")
    averaged = mean.to_torch_state_dict()
    assert any(not torch.equal(averaged[key], state[key]) for key in state if "lora_A" in key)
    assert all(not averaged[key].any() for key in state if "lora_B" in key)
    load_arrays(model, mean)


def test_features_are_read_back_until_the_encoder_changes(
    demo_assets: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, reviews = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    model = build_model(RunSettings(model=str(model_dir), pooling="layers"), tokenizer, CPU)
    classifier = pooled_classifier(model)
    assert classifier is not None
    table = pd.read_parquet(reviews).head(24)
    records = encode(list(table.text), list(table.label), tokenizer, 32)
    pad = int(tokenizer.pad_token_id)
    computed = []
    compute = pooled_features.pooled_features

    def counting(*args: object) -> tuple:
        computed.append(1)
        return compute(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pooled_features, "pooled_features", counting)
    first, tokens = cached_features(classifier, records, pad, CPU, 8, tmp_path)
    again, tokens_again = cached_features(classifier, records, pad, CPU, 8, tmp_path)
    assert len(computed) == 1 and tokens == tokens_again == int(records.lengths().sum())
    assert torch.equal(first.tensors[0], again.tensors[0])
    assert torch.equal(again.tensors[1], torch.as_tensor(records.labels))
    fedavg_of_identical_sites(model, sites=3)
    cached_features(classifier, records, pad, CPU, 8, tmp_path)
    assert len(computed) == 1  # the global adapter of a head-only round: the same features
    with torch.no_grad():  # a new global adapter: other features
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.5)
    changed, _ = cached_features(classifier, records, pad, CPU, 8, tmp_path)
    assert len(computed) == 2 and not torch.allclose(changed.tensors[0], first.tensors[0])
    assert len(list(tmp_path.glob("pooled-*.npz"))) == 2

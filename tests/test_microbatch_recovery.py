"""Training under adaptation gives the adapter of unconstrained training (tiny GPT-2, fixed seed).

Dropout is off (LoRA and GPT-2 alike): with it, splitting a batch draws different masks, so
the runs would differ by design, not by error. Memory is never read from the host: the probe
is a fixed reading, and out-of-memory errors are raised on purpose.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedllm.cli.demo import synthetic_reviews, write_tiny_gpt2
from fedllm.learning.adapter import adapter_state
from fedllm.learning.batches import Encoded, batches, encode
from fedllm.learning.model import build_model, load_tokenizer
from fedllm.settings import RunSettings, build
from fedllm.telemetry.headroom import MemoryState
from supernode.adaptation import Adaptation
from supernode.microbatch import longest_rows, trial_peak
from supernode.train import TrainStats, train

BATCH, STEPS, MU = 8, 6, 0.05
CPU = torch.device("cpu")
CALM = MemoryState(math.inf, 0.0, 0.0)
Result = tuple[TrainStats, dict[str, torch.Tensor]]
DROPOUTS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunSettings:
    """Settings for the tiny GPT-2 without any dropout."""
    model_dir = write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
    config = json.loads((model_dir / "config.json").read_text())
    config.update(dict.fromkeys(DROPOUTS, 0.0))
    (model_dir / "config.json").write_text(json.dumps(config))
    return build(RunSettings, model=str(model_dir), lora_dropout=0.0, seed=7)


@pytest.fixture(scope="module")
def reviews(run: RunSettings) -> Encoded:
    frame = synthetic_reviews(64, seed=3)
    return encode(frame["text"].tolist(), frame["label"].tolist(), load_tokenizer(run.model), 64)


def training(
    run: RunSettings,
    reviews: Encoded,
    adaptation: Adaptation | None = None,
    patch: Callable[[Any], None] = lambda model: None,
    probe: Callable[[], MemoryState] = lambda: CALM,
) -> Result:
    """Six FedProx steps of batch 8 from the seeded initial adapter; stats and trained adapter."""
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, CPU)
    patch(model)
    loader = batches(reviews, int(tokenizer.pad_token_id), BATCH, shuffle=True, seed=11)
    stats = train(model, loader, CPU, 5e-3, 1, STEPS, MU, adaptation, probe)
    return stats, adapter_state(model)


@pytest.fixture(scope="module")
def unconstrained(run: RunSettings, reviews: Encoded) -> Result:
    return training(run, reviews)


def assert_same_adapter(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def failing_forward(calls: set[int], err: BaseException) -> Callable[[Any], None]:
    """A patch making the model's forward calls numbered in `calls` (from 1) raise `err`."""

    def patch(model: Any) -> None:
        forward, count = model.forward, [0]

        def failing(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] in calls:
                raise err
            return forward(*args, **kwargs)

        model.forward = failing

    return patch


def test_training_moves_the_adapter(run: RunSettings, unconstrained: Result) -> None:
    """Guards the comparisons below against an adapter that never changed."""
    initial = adapter_state(build_model(run, load_tokenizer(run.model), CPU))
    moved = max(float((unconstrained[1][k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3


def test_small_micro_batches_give_the_same_adapter(
    run: RunSettings, reviews: Encoded, unconstrained: Result
) -> None:
    stats, adapter = training(run, reviews, Adaptation(micro_batch=3, ceiling=3))
    assert_same_adapter(adapter, unconstrained[1])
    assert stats.loss == pytest.approx(unconstrained[0].loss, rel=1e-5)
    assert stats.examples == unconstrained[0].examples == BATCH * STEPS


def test_out_of_memory_mid_step_halves_and_redoes_the_rest(
    run: RunSettings, reviews: Encoded, unconstrained: Result
) -> None:
    # Micro-batches of 4: call 4 is the second half of step 2. It fails; 2 rows at a time after.
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")
    stats, adapter = training(
        run,
        reviews,
        Adaptation(micro_batch=4, ceiling=4, calm_steps=2),
        failing_forward({4}, oom),
    )
    assert_same_adapter(adapter, unconstrained[1])
    assert (stats.memory["memory-oom-recoveries"], stats.memory["micro-batch-min"]) == (1, 2)
    assert stats.steps == STEPS
    # Growth after calm steps stops below the size that failed.
    assert stats.memory["micro-batch"] == 2


def test_a_backward_that_fails_halfway_leaves_no_partial_gradient(
    run: RunSettings, reviews: Encoded, unconstrained: Result
) -> None:
    """The error comes after the head and the last block have their gradients for this
    micro-batch: those must be dropped, not added twice."""
    seen_partial: list[bool] = []

    def patch(model: Any) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        first_block = model.base_model.model.transformer.h[0]
        backwards = [0]

        def fail_once(grad: torch.Tensor) -> torch.Tensor:
            backwards[0] += 1
            if backwards[0] == 3:
                seen_partial.append(any(p.grad is not None for p in trainable))
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: 1 GiB")
            return grad

        def watch(module: Any, args: Any, output: torch.Tensor) -> None:
            output.register_hook(fail_once)

        first_block.register_forward_hook(watch)

    stats, adapter = training(run, reviews, Adaptation(micro_batch=4, ceiling=4), patch)
    assert seen_partial == [True]
    assert stats.memory["memory-oom-recoveries"] == 1
    assert_same_adapter(adapter, unconstrained[1])


def test_one_row_out_of_memory_switches_on_checkpointing(
    run: RunSettings, reviews: Encoded, unconstrained: Result
) -> None:
    adaptation = Adaptation(micro_batch=1, ceiling=1)
    oom = torch.OutOfMemoryError("CUDA out of memory.")
    stats, adapter = training(run, reviews, adaptation, failing_forward({2}, oom))
    assert adaptation.checkpointing and stats.memory["gradient-checkpointing"] == 1
    assert_same_adapter(adapter, unconstrained[1])


def test_pressure_mid_step_halves_without_changing_the_result(
    run: RunSettings, reviews: Encoded, unconstrained: Result
) -> None:
    readings = iter([CALM] * 3 + [MemoryState(2**30, 0.5, 0.35)] * 4)
    stats, adapter = training(
        run, reviews, Adaptation(micro_batch=4, ceiling=4), probe=lambda: next(readings, CALM)
    )
    assert stats.memory["memory-pressure-halvings"] == 1
    assert stats.memory["memory-pressure-max"] == pytest.approx(0.35)
    assert_same_adapter(adapter, unconstrained[1])


def test_without_adaptation_out_of_memory_ends_training(run: RunSettings, reviews: Encoded) -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory.")
    with pytest.raises(torch.OutOfMemoryError):
        training(run, reviews, None, failing_forward({2}, oom))


def test_other_errors_are_not_retried(run: RunSettings, reviews: Encoded) -> None:
    shapes = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes"):
        training(run, reviews, Adaptation(4, 4), failing_forward({1}, shapes))


def test_trial_step_leaves_weights_gradients_and_rng_as_they_were(
    run: RunSettings, reviews: Encoded, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer(run.model)
    model = build_model(run, tokenizer, CPU)
    before = {name: tensor.clone() for name, tensor in adapter_state(model).items()}
    rng = torch.get_rng_state()
    trial = longest_rows(reviews, int(tokenizer.pad_token_id), 2)
    assert trial["attention_mask"].sum(dim=1).tolist() == sorted(reviews.lengths())[-2:]
    assert trial_peak(model, trial, CPU) >= 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert_same_adapter(adapter_state(model), before)

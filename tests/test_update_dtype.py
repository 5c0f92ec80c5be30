"""16-bit updates: the node sends a rounded delta, the server restores float32 weights."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedllm.errors import FedllmError
from fedllm.learning.updates import decode_reply, encode_update, from_wire, to_wire
from fedllm.rundir.ledger import RoundLedger
from fedllm.settings import RunSettings, build
from superlink.round_grid import RoundGrid
from superlink.update_guard import check_update, guarded

RNG = np.random.default_rng(0)
GLOBAL = {
    "lora_A": RNG.normal(0, 0.1, (8, 64)).astype(np.float32),
    "lora_B": RNG.normal(0, 0.01, (64, 8)).astype(np.float32),
}


def trained(scale: float = 1e-3) -> dict[str, np.ndarray]:
    """The global adapter after a small local step."""
    return {name: value + RNG.normal(0, scale, value.shape).astype(np.float32)
            for name, value in GLOBAL.items()}  # fmt: skip


def as_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(value) for name, value in arrays.items()})


# Messages need the identity of the task that creates them (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("task_identity")


def test_bfloat16_rounds_like_torch() -> None:
    values = np.concatenate([RNG.normal(0, 1, 10_000), [0.0, -0.0, 1e-40, 3.4e38, np.inf]])
    values = values.astype(np.float32)
    ours = from_wire(to_wire(values, "bfloat16"), "bfloat16")
    theirs = torch.from_numpy(values).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert to_wire(values, "bfloat16").dtype == np.uint16


@pytest.mark.parametrize(("dtype", "bits"), [("float16", 11), ("bfloat16", 8)])
def test_delta_round_trip_keeps_the_update_precise(dtype: str, bits: int) -> None:
    after = trained()
    name, record = encode_update(after, GLOBAL, dtype)
    assert name == f"delta-{dtype}"
    sent = as_record(GLOBAL)
    content = decode_reply(RecordDict({name: record, "metrics": MetricRecord({"n": 1})}), sent)
    assert set(content.array_records) == {"arrays"} and "metrics" in content
    decoded = {key: array.numpy() for key, array in content.array_records["arrays"].items()}
    for key, value in after.items():
        assert decoded[key].dtype == np.float32
        update = value - GLOBAL[key]
        # Error relative to the update (not to the weight): a few units in the last place.
        assert np.abs(decoded[key] - value).max() <= 2.0**-bits * np.abs(update).max()
    # Rounding the weights themselves instead would lose most of a bfloat16 update.
    if dtype == "bfloat16":
        naive = from_wire(to_wire(after["lora_A"], dtype), dtype)
        assert (
            np.abs(naive - after["lora_A"]).max()
            > 10 * np.abs(decoded["lora_A"] - after["lora_A"]).max()
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_16_bit_update_is_at_most_055_of_the_float32_one(dtype: str) -> None:
    full = encode_update(trained(), GLOBAL, "float32")[1].count_bytes()
    half = encode_update(trained(), GLOBAL, dtype)[1].count_bytes()
    assert half <= 0.55 * full


def test_float32_sends_the_weights_unchanged() -> None:
    after = trained()
    name, record = encode_update(after, GLOBAL, "float32")
    assert name == "arrays"
    for key, value in after.items():
        np.testing.assert_array_equal(record[key].numpy(), value)


def test_a_delta_that_does_not_fit_is_left_for_the_update_guard() -> None:
    sent = as_record(GLOBAL)
    wrong = {"lora_A": trained()["lora_A"][:4], "lora_B": trained()["lora_B"]}
    name, record = encode_update(wrong, {**GLOBAL, "lora_A": GLOBAL["lora_A"][:4]}, "float16")
    content = decode_reply(RecordDict({name: record}), sent)
    assert set(content.array_records) == {"delta-float16"}
    reason = check_update(content.array_records["delta-float16"], sent, max_norm=0.0)
    assert reason is not None and "shape/dtype" in reason


class FakeGrid:
    """Replies to every train message with a float16 delta, on the second pull."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushed: list[Message] = []

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.pushed = list(messages)
        return [f"m{index}" for index, _ in enumerate(self.pushed)]

    def pull_messages(self, message_ids: set[str]) -> list[Message]:
        self.pulls += 1
        if self.pulls < 2:
            return []
        replies = []
        for index, message in enumerate(self.pushed):
            message.metadata.__dict__["_message_id"] = f"m{index}"
            name, record = encode_update(trained(), GLOBAL, "float16")
            metrics = MetricRecord({"num-examples": 10, "train-seconds": 1.5 + index})
            replies.append(
                Message(RecordDict({name: record, "metrics": metrics}), reply_to=message)
            )
        return replies


def test_the_server_casts_back_before_aggregation() -> None:
    sent_arrays = as_record(GLOBAL)
    content = RecordDict({"arrays": sent_arrays, "config": ConfigRecord({"server-round": 1})})
    messages = [Message(content, dst_node_id=node, message_type="train") for node in (7, 8)]
    fake = FakeGrid()
    grid = RoundGrid(fake, run_id=1, poll=0.01)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(messages, timeout=5.0))
    assert fake.pulls == 2
    strategy = guarded(FedAvg)(min_available_nodes=1)
    strategy.on_round = lambda _round, _ledger: None  # type: ignore[method-assign]
    strategy._sent, strategy._ledger = sent_arrays, RoundLedger(sampled=2)
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None  # the update guard accepted float32 weights of the right shapes
    for key, value in arrays.items():
        assert value.numpy().dtype == np.float32
        assert np.abs(value.numpy() - GLOBAL[key]).max() < 0.01
    exchange = grid.take()["train"]
    assert [node["node"] for node in exchange["nodes"]] == [7, 8]
    assert [node["train-seconds"] for node in exchange["nodes"]] == [1.5, 2.5]
    full = sent_arrays.count_bytes()
    assert all(
        node["received-bytes"] < 0.55 * full < node["sent-bytes"] for node in exchange["nodes"]
    )
    assert exchange["seconds"] > 0 and grid.take() == {}


def test_update_dtype_is_a_validated_run_setting() -> None:
    assert RunSettings().update_dtype == "float32"
    assert build(RunSettings, update_dtype="bfloat16").update_dtype == "bfloat16"
    with pytest.raises(FedllmError, match="'update-dtype'"):
        build(RunSettings, update_dtype="int8")

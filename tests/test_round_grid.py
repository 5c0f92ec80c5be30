"""The ServerApp's grid: prompt polling, per-round exchange records, a timeout that holds."""

import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedllm.round_grid import RoundGrid


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need the identity of the task that creates them (normally the ServerApp)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)


class SlowNodes:
    """Node k replies on pull number `after[k]`; node 0 never does."""

    def __init__(self, after: dict[int, int]) -> None:
        self.after, self.pulls, self.pushed = after, 0, []

    def push_messages(self, messages: list[Message]) -> list[str]:
        self.pushed = messages
        for index, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{index}"
        return [f"m{index}" for index in range(len(messages))]

    def pull_messages(self, message_ids: set[str]) -> list[Message]:
        self.pulls += 1
        replies = []
        for index, message in enumerate(self.pushed):
            if (
                f"m{index}" in message_ids
                and self.after.get(message.metadata.dst_node_id) == self.pulls
            ):
                metrics = MetricRecord({"num-examples": 4, "train-seconds": 0.5})
                replies.append(Message(RecordDict({"metrics": metrics}), reply_to=message))
        return replies


def train_messages(nodes: list[int]) -> list[Message]:
    content = RecordDict({"arrays": ArrayRecord([np.zeros(8, dtype=np.float32)]),
                          "config": ConfigRecord({"server-round": 1})})  # fmt: skip
    return [Message(content, dst_node_id=node, message_type="train") for node in nodes]


def test_replies_are_collected_as_they_come_and_the_round_is_timed() -> None:
    nodes = SlowNodes({1: 1, 2: 3})
    grid = RoundGrid(nodes, run_id=1, poll=0.01)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(train_messages([1, 2]), timeout=10.0))
    assert len(replies) == 2 and nodes.pulls == 3
    assert time.monotonic() - started < 1.0  # no 3 s sleeps between pulls
    grid.mark_aggregated("train")
    exchange = grid.take()["train"]
    assert 0 < exchange["seconds"] <= exchange["aggregated-seconds"]
    assert [node["train-seconds"] for node in exchange["nodes"]] == [0.5, 0.5]


def test_a_node_that_never_replies_only_costs_the_timeout() -> None:
    grid = RoundGrid(SlowNodes({1: 1}), run_id=1, poll=0.01)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(train_messages([1, 0]), timeout=0.3))
    assert len(replies) == 1
    assert 0.3 <= time.monotonic() - started < 2.0
    silent = grid.take()["train"]["nodes"][1]
    assert silent["node"] == 0 and "received-bytes" not in silent and silent["sent-bytes"] > 32

"""The ServerApp's grid: prompt polling, per-round exchange records, a timeout that holds."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611

from superlink import round_grid
from superlink.round_grid import RoundGrid
from tests.clock import FakeClock

# Messages need the identity of the task that creates them (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The grid's clock, moved only by its own sleeps: no dependence on machine load."""
    fake = FakeClock()
    monkeypatch.setattr(round_grid, "time", fake)
    return fake


class SlowNodes:
    """Node k replies on pull number `after[k]`; node 0 never does."""

    def __init__(self, after: dict[int, int]) -> None:
        self.after, self.pulls, self.pushed = after, 0, []

    def get_nodes(self) -> list[NodeInfo]:
        """Flower's registry: node 1 was registered as `hospital-a`, node 2 without a name."""
        return [NodeInfo(node_id=1, name="hospital-a"), NodeInfo(node_id=2)]

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


def test_replies_are_collected_as_they_come_and_the_round_is_timed(clock: FakeClock) -> None:
    nodes = SlowNodes({1: 1, 2: 3})
    grid = RoundGrid(nodes, run_id=1, poll=0.01)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(train_messages([1, 2]), timeout=10.0))
    assert len(replies) == 2 and nodes.pulls == 3
    assert clock.slept == [0.01, 0.01]  # one short poll between pulls, no 3 s sleeps
    clock.sleep(0.5)  # aggregation
    grid.mark_aggregated("train")
    exchange = grid.take()["train"]
    assert exchange["seconds"] == pytest.approx(0.02)
    assert exchange["aggregated-seconds"] == pytest.approx(0.52)
    assert [node["train-seconds"] for node in exchange["nodes"]] == [0.5, 0.5]


def test_a_node_that_never_replies_only_costs_the_timeout(clock: FakeClock) -> None:
    grid = RoundGrid(SlowNodes({1: 1}), run_id=1, poll=0.01)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(train_messages([1, 0]), timeout=0.3))
    assert len(replies) == 1
    assert 0.3 <= sum(clock.slept) < 0.3 + 0.01 + 1e-9
    silent = grid.take()["train"]["nodes"][1]
    assert silent["node"] == 0 and "received-bytes" not in silent and silent["sent-bytes"] > 32


def test_nodes_are_named_by_their_registered_site(clock: FakeClock) -> None:
    grid = RoundGrid(SlowNodes({1: 1, 2: 1}), run_id=1, poll=0.01)  # type: ignore[arg-type]
    assert grid.site(1) == "1"  # before the nodes were listed
    assert list(grid.get_node_ids()) == [1, 2]  # what Flower's strategies do before sending
    list(grid.send_and_receive(train_messages([1, 2, 3]), timeout=0.02))
    nodes = grid.take()["train"]["nodes"]
    assert [(node["node"], node["site"]) for node in nodes] == [
        (1, "hospital-a"), (2, "2"), (3, "3")
    ]  # fmt: skip


def test_aggregation_gets_the_metrics_every_site_sent(clock: FakeClock) -> None:
    """A site's policy may keep metrics home: Flower aggregates only records with equal keys."""

    class UnevenNodes(SlowNodes):
        def pull_messages(self, message_ids: set[str]) -> list[Message]:
            replies = super().pull_messages(message_ids)
            for reply in replies:
                if reply.metadata.src_node_id == 2:
                    reply.content["metrics"] = MetricRecord({"num-examples": 4})
            return replies

    grid = RoundGrid(UnevenNodes({1: 1, 2: 1}), run_id=1, poll=0.01)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(train_messages([1, 2]), timeout=10.0))
    assert [dict(reply.content["metrics"]) for reply in replies] == [{"num-examples": 4}] * 2
    nodes = grid.take()["train"]["nodes"]
    assert [node.get("train-seconds") for node in nodes] == [0.5, None]  # history keeps all

"""A Grid that records, per phase of a round, participation and record payload bytes."""

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedllm.telemetry import metrics

PHASES = ("train", "evaluate", "query")


def phase(message_type: str) -> str:
    """`train`, `evaluate` or `query` (Flower's types, sub-types folded in), else `other`."""
    kind = message_type.partition(".")[0]
    return kind if kind in PHASES else "other"


def payload_bytes(content: RecordDict) -> int:
    """Bytes of arrays, metrics and configs in a message (no protocol overhead)."""
    return sum(record.count_bytes() for record in content.values())


def record_exchange(run_id: int, sent: list[Message], replies: list[Message]) -> None:
    """Nodes sampled / replied / failed and bytes each way for one send-and-receive."""
    if not sent:
        return
    labels = (str(run_id), phase(sent[0].metadata.message_type))
    answered = [reply for reply in replies if reply.has_content()]
    metrics.NODES_SAMPLED.labels(*labels).set(len(sent))
    metrics.NODES_REPLIED.labels(*labels).set(len(answered))
    metrics.NODES_FAILED.labels(*labels).set(len(sent) - len(answered))
    metrics.SENT_BYTES.labels(*labels).set(sum(payload_bytes(m.content) for m in sent))
    metrics.RECEIVED_BYTES.labels(*labels).set(sum(payload_bytes(m.content) for m in answered))


class MeteredGrid(Grid):
    """Flower's Grid, unchanged, with `send_and_receive` (what strategies use) recorded."""

    def __init__(self, grid: Grid, run_id: int) -> None:
        self.grid = grid
        self.run_id = run_id

    def set_run(self, run: Run) -> None:
        """Delegated."""
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        """Delegated."""
        return self.grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Delegated."""
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """Delegated."""
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Delegated."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegated."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegated."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Delegated, then recorded."""
        sent = list(messages)
        replies = list(self.grid.send_and_receive(sent, timeout=timeout))
        record_exchange(self.run_id, sent, replies)
        return replies

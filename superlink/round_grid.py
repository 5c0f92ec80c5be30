"""The ServerApp's Grid: replies seen promptly, each exchange timed and weighed, updates decoded.

Flower's own `send_and_receive` looks for replies every 3 s, so a round ends up to 3 s after
its last node replied; this one looks every `POLL_SECONDS`. For the round's history it records,
per phase, the time from sending to the last reply (and to aggregation, when marked), and per
node the payload bytes each way and the timings the node reported. Replies carrying a 16-bit
update delta (`fedllm.learning.updates`) are turned back into float32 weights before the
strategy sees them, after their bytes were counted.

Nodes are named by their site: the name the operator registered the node's key under (the
certificate CN, `fedllm node register`), which Flower's registry returns with the node list and
a node cannot set. The grid learns names whenever the nodes are listed, as Flower's strategies
do before each exchange; a node it has no name for is named by its id.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

from flwr.app import Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedllm.identity.audit import append_from_env
from fedllm.learning.updates import WEIGHTS, decode_reply
from fedllm.privacy.egress import METRIC_KEYS, contents, violations
from fedllm.settings import RunSettings
from fedllm.telemetry.grid import payload_bytes, phase, record_exchange
from superlink.secure_round import SecureRound, SecureRoundFailed

POLL_SECONDS = 0.2
# Reply metrics copied per node into the history (timings and memory the node measured).
NODE_METRICS = (
    "num-examples",
    "examples-per-second",
    "train-seconds",
    "train-cpu-seconds",
    "startup-seconds",
    "setup-seconds",
    "peak-rss-bytes",
    "dp-epsilon",
    "dp-delta",
    "dp-site-epsilon",
    "dp-noise-multiplier",
    "secagg-weight",
    "secagg-clipped",
)


@dataclass
class Exchange:
    """One send-and-receive: when it started, how long it took, what each node sent back."""

    started: float
    seconds: float = 0.0
    aggregated_seconds: float | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """History form."""
        found = {"seconds": self.seconds, "nodes": self.nodes}
        if self.aggregated_seconds is not None:
            found["aggregated-seconds"] = self.aggregated_seconds
        return found


def keep_common_metrics(replies: list[Message]) -> None:
    """Cut each reply's metrics to the keys every reply has (its node entry keeps them all).

    Flower aggregates only metric records with the same keys, and sites may send fewer: their
    policy keeps some at home, a node without memory adaptation has no micro-batch figures.
    """
    contents = [reply.content for reply in replies if reply.has_content()]
    keys = [{key for record in c.metric_records.values() for key in record} for c in contents]
    if not keys:
        return
    common = set.intersection(*keys)
    for content in contents:
        for name, record in list(content.metric_records.items()):
            content[name] = MetricRecord({key: record[key] for key in record if key in common})


def node_entry(sent: Message, reply: Message | None, site: str) -> dict[str, Any]:
    """Bytes each way, the node's own timings, and what its reply carried (names, shapes, keys;
    `egress-violations` when it carried what no reply should) for one node of an exchange."""
    entry: dict[str, Any] = {
        "node": sent.metadata.dst_node_id,
        "site": site,
        "sent-bytes": payload_bytes(sent.content),
    }
    if reply is not None and reply.has_content():
        entry["received-bytes"] = payload_bytes(reply.content)
        for metrics in reply.content.metric_records.values():
            entry |= {key: metrics[key] for key in NODE_METRICS if key in metrics}
        entry["contents"] = contents(reply)
        if problems := violations(sent, reply, METRIC_KEYS):
            entry["egress-violations"] = problems
    return entry


class RoundGrid(Grid):
    """Flower's Grid with prompt polling, exchange records and update decoding.

    With `secure` run settings (secure aggregation on), training exchanges run as SecAgg+
    rounds (`superlink.secure_round`); a failed one is logged, audited and kept in
    `failed` for the round's history, then skipped (no update) or, as configured, raised.
    """

    def __init__(
        self,
        grid: Grid,
        run_id: int,
        poll: float = POLL_SECONDS,
        secure: RunSettings | None = None,
    ) -> None:
        self.grid = grid
        self.run_id = run_id
        self.poll = poll
        self.secure = secure
        self.failed: str | None = None  # why this round's secure aggregation failed
        self.exchanges: dict[str, Exchange] = {}
        self.sites: dict[int, str] = {}  # node id -> registered name, learned from node lists

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
        """The ids of `get_nodes`."""
        return [node.node_id for node in self.get_nodes()]

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Delegated; their registered names are remembered."""
        nodes = list(self.grid.get_nodes())
        self.sites |= {node.node_id: node.name for node in nodes if node.name}
        return nodes

    def site(self, node_id: int) -> str:
        """The node's registered site name, or its id when none is known."""
        return self.sites.get(node_id, str(node_id))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegated."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegated."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push, collect replies until all arrived or `timeout`, record, decode."""
        sent = list(messages)
        kind = phase(sent[0].metadata.message_type) if sent else "other"
        if self.secure is not None and kind == "train":
            return self.secure_train(self.secure, sent, timeout)
        return self.exchange(sent, timeout, kind)

    def secure_train(
        self, run: RunSettings, sent: list[Message], timeout: float | None
    ) -> list[Message]:
        """The training exchange as a SecAgg+ round: the survivors' replies, with their mean."""
        try:
            return SecureRound(run, self.exchange, timeout).train(sent)
        except SecureRoundFailed as err:
            self.failed = str(err)
            log(WARNING, "%s", err)
            append_from_env("secure-round-failed", run_id=self.run_id, reason=str(err))
            if run.secagg_failure == "stop":
                raise
            return []

    def exchange(self, sent: list[Message], timeout: float | None, name: str) -> list[Message]:
        """One send-and-receive, recorded under `name`."""
        exchange = Exchange(started=time.monotonic())
        ids = list(self.grid.push_messages(sent)) if sent else []
        # Flower returns no ids when a push fails as a whole, None for a malformed message.
        by_id = {mid: message for mid, message in zip(ids, sent, strict=False) if mid}
        replies = self._collect(set(by_id), timeout)
        exchange.seconds = time.monotonic() - exchange.started
        record_exchange(self.run_id, sent, replies, self.site)
        answered = {reply.metadata.reply_to_message_id: reply for reply in replies}
        exchange.nodes = [
            node_entry(message, answered.get(mid), self.site(message.metadata.dst_node_id))
            for mid, message in by_id.items()
        ]
        if sent:
            self.exchanges[name] = exchange
        for reply in replies:
            source = by_id.get(reply.metadata.reply_to_message_id)
            if reply.has_content() and source is not None:
                base = source.content.array_records.get(WEIGHTS)
                reply.content = decode_reply(reply.content, base)
        keep_common_metrics(replies)
        return replies

    def _collect(self, pending: set[str], timeout: float | None) -> list[Message]:
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            found = list(self.grid.pull_messages(pending))
            replies += found
            pending -= {reply.metadata.reply_to_message_id for reply in found}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll)
        return replies

    def mark_aggregated(self, phase_name: str) -> None:
        """The strategy has aggregated the replies of `phase_name`'s last exchange."""
        if phase_name in self.exchanges:
            exchange = self.exchanges[phase_name]
            exchange.aggregated_seconds = time.monotonic() - exchange.started

    def take(self) -> dict[str, Any]:
        """The round's exchanges, history form; forgotten afterwards."""
        found = {name: exchange.summary() for name, exchange in self.exchanges.items()}
        self.exchanges = {}
        return found

"""Per phase of a round: participation and record payload bytes, as Prometheus metrics."""

from collections.abc import Callable

from flwr.app import Message, RecordDict

from fedllm.telemetry import metrics

PHASES = ("train", "evaluate", "query")


def phase(message_type: str) -> str:
    """`train`, `evaluate` or `query` (Flower's types, sub-types folded in), else `other`."""
    kind = message_type.partition(".")[0]
    return kind if kind in PHASES else "other"


def payload_bytes(content: RecordDict) -> int:
    """Bytes of arrays, metrics and configs in a message (no protocol overhead)."""
    return sum(record.count_bytes() for record in content.values())


def record_exchange(
    run_id: int, sent: list[Message], replies: list[Message], site: Callable[[int], str]
) -> None:
    """Nodes sampled / replied / failed, bytes each way and who replied, for one exchange.

    `site` names a node id (its registered site name).
    """
    if not sent:
        return
    labels = (str(run_id), phase(sent[0].metadata.message_type))
    answered = [reply for reply in replies if reply.has_content()]
    replied = {reply.metadata.src_node_id for reply in answered}
    for message in sent:
        node_id = message.metadata.dst_node_id
        metrics.SITE_REPLIED.labels(*labels, site(node_id)).set(float(node_id in replied))
    metrics.NODES_SAMPLED.labels(*labels).set(len(sent))
    metrics.NODES_REPLIED.labels(*labels).set(len(answered))
    metrics.NODES_FAILED.labels(*labels).set(len(sent) - len(answered))
    metrics.SENT_BYTES.labels(*labels).set(sum(payload_bytes(m.content) for m in sent))
    metrics.RECEIVED_BYTES.labels(*labels).set(sum(payload_bytes(m.content) for m in answered))

"""What may leave a site: the rules both the site's egress guard and the ServerApp apply.

A training reply carries one array record, the adapter (float32 `arrays`, or the 16-bit
`delta-<dtype>` of the run's `update-dtype`; with secure aggregation the uint32 `masked`
update) with exactly the names and shapes the node received, and one `metrics` record; an
evaluation reply only `metrics`; a secure round's key stage only its `secagg` keys. Metrics
are scalar numbers (no lists: no per-example values) under keys fedllm's ClientApp reports.
Anything else (text, token ids, an extra array, a config record) does not belong in a reply.
"""

from flwr.app import Message

from fedllm.learning.updates import PREFIX, UPDATE_DTYPES, WEIGHTS
from fedllm.privacy.secagg import (
    COLLECT,
    MASKED,
    REPLY_KEYS,
    SECAGG,
    SITE_METRICS,
    WIRE,
    stage_of,
)

UPDATE_RECORDS = {WEIGHTS} | {PREFIX + dtype for dtype in UPDATE_DTYPES if dtype != "float32"}
# What fedllm's ClientApp reports: timings, throughput, memory, losses, privacy spent.
METRIC_KEYS = frozenset({
    "num-examples", "train-loss", "train-steps", "train-seconds", "train-cpu-seconds",
    "examples-per-second", "tokens-per-second", "startup-seconds", "setup-seconds",
    "peak-rss-bytes", "micro-batch", "micro-batch-fitted", "micro-batch-min",
    "gradient-checkpointing", "memory-oom-recoveries", "memory-pressure-halvings",
    "memory-growths", "memory-pressure-max", "memory-usage-max", "memory-budget-bytes",
    "memory-row-bytes", "dp-epsilon", "dp-delta", "dp-site-epsilon", "dp-noise-multiplier",
    "eval-loss", "eval-accuracy", "eval-f1", "site-weight",
})  # fmt: skip


def key_stage_violations(stage: str, reply: Message) -> list[str]:
    """A reply to a secure round's key stage: the stage's keys in one `secagg` record."""
    content = reply.content
    records = set(content.array_records) | set(content.metric_records) | set(content.config_records)
    if records != {SECAGG} or set(content.config_records.get(SECAGG, {})) != REPLY_KEYS[stage]:
        return [f"a {stage} reply carrying {sorted(records)} beyond the stage's keys"]
    return []


def violations(sent: Message, reply: Message, allowed: frozenset[str]) -> list[str]:
    """Why `reply` must not leave the site (empty: it may)."""
    stage = stage_of(sent)
    if stage in REPLY_KEYS:
        return key_stage_violations(stage, reply)
    if stage == COLLECT:
        allowed |= SITE_METRICS
    content, found = reply.content, []
    if content.config_records:
        found.append(f"config records {sorted(content.config_records)}")
    received = next(iter(sent.content.array_records.values()), None)
    arrays = dict(content.array_records)
    if sent.metadata.message_type.startswith("train") and received is not None:
        names, expected = set(arrays), {MASKED} if stage == COLLECT else UPDATE_RECORDS
        if len(names) != 1 or not names <= expected:
            found.append(f"array records {sorted(names)}: expected one adapter update")
        for record in arrays.values():
            shapes = {name: tuple(array.shape) for name, array in record.items()}
            if shapes != {name: tuple(array.shape) for name, array in received.items()}:
                found.append("adapter arrays differ in names or shapes from those received")
            if stage == COLLECT and any(array.dtype != WIRE for array in record.values()):
                found.append(f"a masked update that is not {WIRE}")
    elif arrays:
        found.append(f"array records {sorted(arrays)} in a reply that carries none")
    if set(content.metric_records) - {"metrics"}:
        found.append(f"metric records {sorted(content.metric_records)}")
    for name, metrics in content.metric_records.items():
        for key, value in metrics.items():
            if key not in allowed:
                found.append(f"metric {name}.{key} not allowed")
            if not isinstance(value, int | float) or isinstance(value, bool):
                found.append(f"metric {name}.{key} is not a scalar")
    return found


def contents(reply: Message) -> dict[str, object]:
    """What a reply carried: record and array names with shapes, metric and config keys."""
    content = reply.content
    return {
        "arrays": {
            record_name: {name: list(array.shape) for name, array in record.items()}
            for record_name, record in content.array_records.items()
        },
        "metrics": {name: sorted(record) for name, record in content.metric_records.items()},
        "configs": {name: sorted(record) for name, record in content.config_records.items()},
    }

"""What may leave a site, checked on every reply before it does: a Flower ClientApp mod.

A training reply carries one array record, the adapter (float32 `arrays`, or the 16-bit
`delta-<dtype>` of the run's `update-dtype`) with exactly the names and shapes the node
received, and one `metrics` record; an evaluation reply only `metrics`. Metrics are scalar
numbers (no lists: no per-example values) under keys the site allows. Anything else (text,
token ids, an extra array, a config record) is not sent: the reply becomes an error, and
the node's egress log (node config `egress-log`) says what was held back.
"""

import json
import time
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable

from fedllm.privacy import BLOCKED
from fedllm.settings import NodeSettings, from_flower_config
from fedllm.updates import PREFIX, UPDATE_DTYPES, WEIGHTS
from supernode.site_policy import REQUIRED_METRICS, SitePolicy, load_policy

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


def allowed_keys(policy: SitePolicy) -> frozenset[str]:
    """Metric keys that may leave: fedllm's own, narrowed by the site's policy."""
    return METRIC_KEYS if policy.metrics is None else REQUIRED_METRICS | set(policy.metrics)


def violations(sent: Message, reply: Message, allowed: frozenset[str]) -> list[str]:
    """Why `reply` must not leave the site (empty: it may)."""
    content, found = reply.content, []
    if content.config_records:
        found.append(f"config records {sorted(content.config_records)}")
    received = next(iter(sent.content.array_records.values()), None)
    arrays = dict(content.array_records)
    if sent.metadata.message_type.startswith("train") and received is not None:
        names = set(arrays)
        if len(names) != 1 or not names <= UPDATE_RECORDS:
            found.append(f"array records {sorted(names)}: expected one adapter update")
        for record in arrays.values():
            shapes = {name: tuple(array.shape) for name, array in record.items()}
            if shapes != {name: tuple(array.shape) for name, array in received.items()}:
                found.append("adapter arrays differ in names or shapes from those received")
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


def log_egress(path: Path, reply: Message, problems: list[str]) -> None:
    """One JSON line: what the reply carried (names, shapes, metric keys) and the verdict."""
    content = reply.content
    entry = {
        "time": time.time(),
        "message-type": reply.metadata.message_type,
        "arrays": {
            record_name: {name: list(array.shape) for name, array in record.items()}
            for record_name, record in content.array_records.items()
        },
        "metrics": {name: sorted(record) for name, record in content.metric_records.items()},
        "configs": {name: sorted(record) for name, record in content.config_records.items()},
        "blocked": problems,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        log.write(json.dumps(entry) + "\n")


def egress_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: let a reply leave only if it carries what `violations` allows."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    node = from_flower_config(NodeSettings, context.node_config)
    problems = violations(msg, reply, allowed_keys(load_policy(node.privacy_policy)))
    if node.egress_log is not None:
        log_egress(node.egress_log.expanduser(), reply, problems)
    if problems:
        reason = "egress blocked at the site: " + "; ".join(problems)
        return Message(error=Error(code=BLOCKED, reason=reason), reply_to=msg)
    return reply

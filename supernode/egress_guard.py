"""The site's egress guard: a Flower ClientApp mod that lets a reply leave only if it carries
what `fedllm.privacy.egress` allows, narrowed by the site's policy; otherwise the reply becomes an
error and the node's egress log (node setting `egress-log`) says what was held back.
"""

import json
import time
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable

from fedllm.privacy.dp import BLOCKED
from fedllm.privacy.egress import METRIC_KEYS, contents, violations
from fedllm.settings import NodeSettings, from_flower_config
from supernode.site_policy import REQUIRED_METRICS, SitePolicy, load_policy


def allowed_keys(policy: SitePolicy) -> frozenset[str]:
    """Metric keys that may leave: fedllm's own, narrowed by the site's policy."""
    return METRIC_KEYS if policy.metrics is None else REQUIRED_METRICS | set(policy.metrics)


def log_egress(path: Path, reply: Message, problems: list[str]) -> None:
    """One JSON line: what the reply carried (names, shapes, metric keys) and the verdict."""
    entry = {
        "time": time.time(),
        "message-type": reply.metadata.message_type,
        **contents(reply),
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

"""What may leave a site: the adapter update and allowed scalar metrics, nothing else."""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)

from fedllm.privacy.dp import BLOCKED
from fedllm.privacy.egress import METRIC_KEYS, violations
from supernode.egress_guard import egress_guard
from supernode.site_policy import SitePolicy

ADAPTER = {"lora_A": np.zeros((8, 4), np.float32), "lora_B": np.zeros((4, 8), np.float32)}


# Messages need the identity of the task that creates them (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("task_identity")


def train_message() -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in ADAPTER.items()}),
                          "config": ConfigRecord({"server-round": 1})})  # fmt: skip
    return Message(content, dst_node_id=1, message_type="train")


def reply_to(sent: Message, **records: object) -> Message:
    return Message(RecordDict(records), reply_to=sent)  # type: ignore[arg-type]


def honest(sent: Message) -> Message:
    arrays = ArrayRecord({k: Array(v + 1) for k, v in ADAPTER.items()})
    return reply_to(
        sent, arrays=arrays, metrics=MetricRecord({"num-examples": 8, "train-loss": 0.4})
    )


def test_the_adapter_and_scalar_metrics_may_leave() -> None:
    sent = train_message()
    assert violations(sent, honest(sent), METRIC_KEYS) == []
    delta = ArrayRecord({k: Array(v.astype(np.float16)) for k, v in ADAPTER.items()})
    assert violations(sent, reply_to(sent, **{"delta-float16": delta}), METRIC_KEYS) == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"tokens": ArrayRecord({"ids": Array(np.arange(5))})}, "expected one adapter update"),
        ({"text": ConfigRecord({"review": "a great film"})}, "config records ['text']"),
        ({"metrics": MetricRecord({"num-examples": 8, "losses": [0.1, 0.2]})}, "not a scalar"),
        ({"metrics": MetricRecord({"num-examples": 8, "label-0": 1.0})}, "label-0 not allowed"),
        ({"probe": MetricRecord({"num-examples": 8})}, "metric records ['metrics', 'probe']"),
    ],
)
def test_anything_else_is_held_back(extra: dict, problem: str) -> None:
    sent = train_message()
    reply = honest(sent)
    content = RecordDict({**dict(reply.content.items()), **extra})
    problems = violations(sent, Message(content, reply_to=sent), METRIC_KEYS)
    assert any(problem in found for found in problems), problems


def test_arrays_other_than_the_received_ones_are_held_back() -> None:
    sent = train_message()
    wider = ArrayRecord({"lora_A": Array(np.zeros((9, 4), np.float32)),
                         "lora_B": Array(ADAPTER["lora_B"])})  # fmt: skip
    assert violations(sent, reply_to(sent, arrays=wider), METRIC_KEYS) == [
        "adapter arrays differ in names or shapes from those received"
    ]


def test_the_guard_turns_a_forbidden_reply_into_an_error_and_logs_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('metrics = ["train-loss"]\n')
    log = tmp_path / "egress.jsonl"
    config = {"egress-log": str(log), "privacy-policy": str(policy)}
    context = Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})
    sent = train_message()
    assert not egress_guard(sent, context, lambda msg, _ctx: honest(msg)).has_error()

    def leaky(msg: Message, _ctx: Context) -> Message:
        reply = honest(msg)
        reply.content["metrics"]["peak-rss-bytes"] = 3e9  # allowed by fedllm, not by this site
        return reply

    blocked = egress_guard(sent, context, leaky)
    assert blocked.has_error() and blocked.error.code == BLOCKED
    assert "metrics.peak-rss-bytes not allowed" in blocked.error.reason
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[0]["blocked"] == []
    assert entries[1]["arrays"] == {"arrays": {"lora_A": [8, 4], "lora_B": [4, 8]}}
    assert entries[1]["blocked"] == ["metric metrics.peak-rss-bytes not allowed"]
    assert SitePolicy().metrics is None

"""Run state, round progress and results, participation and payload, as the ServerApp records."""

import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from prometheus_client import REGISTRY

from fedllm.telemetry import rounds
from fedllm.telemetry.grid import phase, record_exchange
from fedllm.telemetry.rounds import RunTelemetry
from tests.clock import FakeClock


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_run_from_start_to_finish() -> None:
    run = {"run_id": "101", "strategy": "fedprox"}
    telemetry = RunTelemetry(101, "fedprox", total_rounds=2)
    assert value("fedllm_rounds_completed_total", **run) == 0
    telemetry.state("running")
    telemetry.begin(0)
    assert value("fedllm_run_state", run_id="101", state="running") == 1
    assert value("fedllm_round_current", **run) == 1
    telemetry.closed({"round": 0, "centralized": {"accuracy": 0.5, "f1": 0.4, "loss": 0.7}})
    assert value("fedllm_rounds_completed_total", **run) == 0
    assert value("fedllm_round_duration_seconds_count", **run) is None
    telemetry.closed({
        "round": 1,
        "train": {"train-loss": 0.61},
        "federated": {"eval-accuracy": 0.55, "eval-f1": 0.52, "eval-loss": 0.66},
        "centralized": {"accuracy": 0.6, "f1": 0.58, "loss": 0.64},
    })  # fmt: skip
    assert value("fedllm_rounds_completed_total", **run) == 1
    assert value("fedllm_round_current", **run) == 2
    assert value("fedllm_round_duration_seconds_count", **run) == 1
    assert value("fedllm_round_train_loss", **run) == 0.61
    assert value("fedllm_round_accuracy_ratio", **run, evaluation="federated") == 0.55
    assert value("fedllm_round_f1_score", **run, evaluation="centralized") == 0.58
    assert value("fedllm_round_eval_loss", **run, evaluation="centralized") == 0.64
    telemetry.closed({"round": 2, "centralized": {"accuracy": 0.7, "f1": 0.69, "loss": 0.5}})
    before = time.time()
    telemetry.state("finished")
    assert value("fedllm_rounds_completed_total", **run) == 2
    assert value("fedllm_round_current", **run) == 2
    assert value("fedllm_run_state", run_id="101", state="running") == 0
    assert value("fedllm_run_state", run_id="101", state="finished") == 1
    assert value("fedllm_run_state", run_id="101", state="failed") == 0
    progress = value("fedllm_run_last_progress_timestamp_seconds", run_id="101")
    assert progress is not None and before <= progress <= time.time()


def test_round_duration_excludes_the_initial_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(rounds, "time", clock)
    telemetry = RunTelemetry(102, "fedavg", total_rounds=1)
    telemetry.begin(0)
    clock.sleep(30.0)  # initial evaluation
    telemetry.closed({"round": 0})
    clock.sleep(2.0)  # round 1
    telemetry.closed({"round": 1})
    duration = value("fedllm_round_duration_seconds_sum", run_id="102", strategy="fedavg")
    assert duration == 2.0


def test_a_resumed_run_goes_on_after_its_checkpoint() -> None:
    telemetry = RunTelemetry(103, "fedavg", total_rounds=5)
    telemetry.begin(3)
    assert value("fedllm_round_current", run_id="103", strategy="fedavg") == 4
    telemetry.begin(5)  # nothing left to run
    assert value("fedllm_round_current", run_id="103", strategy="fedavg") == 5


class RepliesFrom:
    """A stand-in for Flower's Grid: node 1 answers, node 2 fails, node 3 never replies."""

    def send_and_receive(self, messages: list[Message], *, timeout: float | None) -> list[Message]:
        first, second, _ = messages
        answer = RecordDict({
            "arrays": ArrayRecord([np.ones(10, dtype=np.float32)]),
            "metrics": MetricRecord({"num-examples": 3}),
        })  # fmt: skip
        return [Message(answer, reply_to=first), Message(Error(1, "boom"), reply_to=second)]


@pytest.fixture
def task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages can only be made inside a Flower task."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 104)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.mark.usefixtures("task")
def test_an_exchange_records_participation_and_payload() -> None:
    content = RecordDict({
        "arrays": ArrayRecord([np.zeros(10, dtype=np.float32)]),
        "config": ConfigRecord({"lr": 0.1}),
    })  # fmt: skip
    sent = [Message(content, dst_node_id=node, message_type="train") for node in (1, 2, 3)]
    replies = list(RepliesFrom().send_and_receive(sent, timeout=1.0))
    sites = {1: "hospital-a", 2: "hospital-b", 3: "hospital-c"}
    record_exchange(104, sent, replies, sites.__getitem__)
    assert [reply.has_content() for reply in replies] == [True, False]
    labels = {"run_id": "104", "phase": "train"}
    assert value("fedllm_round_nodes_sampled", **labels) == 3
    assert value("fedllm_round_nodes_replied", **labels) == 1
    assert value("fedllm_round_nodes_failed", **labels) == 2
    sent_bytes = content["arrays"].count_bytes() + content["config"].count_bytes()
    assert value("fedllm_round_sent_bytes", **labels) == 3 * sent_bytes
    answer = replies[0].content
    received = answer["arrays"].count_bytes() + answer["metrics"].count_bytes()
    assert value("fedllm_round_received_bytes", **labels) == received > 40
    assert value("fedllm_round_site_replied", **labels, site="hospital-a") == 1
    assert value("fedllm_round_site_replied", **labels, site="hospital-b") == 0  # an error
    assert value("fedllm_round_site_replied", **labels, site="hospital-c") == 0  # no reply


def test_rejected_updates_are_counted_per_site() -> None:
    run = {"run_id": "105", "strategy": "fedavg"}
    telemetry = RunTelemetry(105, "fedavg", total_rounds=2)
    nodes = [{"node": 7, "site": "hospital-a"}, {"node": 8, "site": "hospital-b"}]
    for server_round in (1, 2):
        telemetry.closed({
            "round": server_round,
            "exchanges": {"train": {"nodes": nodes}},
            "rejected": [{"node": 8, "site": "hospital-b", "reason": "contains NaN or Inf"}],
        })  # fmt: skip
    assert value("fedllm_updates_rejected_total", **run, site="hospital-a") == 0
    assert value("fedllm_updates_rejected_total", **run, site="hospital-b") == 2


def test_phase_labels_stay_bounded() -> None:
    assert [phase(kind) for kind in ("train", "evaluate", "query", "train.custom")] == [
        "train", "evaluate", "query", "train"
    ]  # fmt: skip
    assert phase("anything else") == "other"

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedMedian

from fedllm.identity import audit
from fedllm.rundir.history import History
from fedllm.rundir.ledger import RoundLedger
from superlink.update_guard import check_update, guarded


def adapter(value: float) -> ArrayRecord:
    return ArrayRecord([np.full((2, 3), value, dtype=np.float32)])


# Messages need the identity of the task that creates them (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("task_identity")


def reply(node_id: int, arrays: ArrayRecord, examples: int = 10) -> Message:
    instruction = Message(RecordDict({"config": ConfigRecord()}), node_id, "train")
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, reply_to=instruction)


def test_acceptable_update() -> None:
    assert check_update(adapter(1.0), adapter(0.0), max_norm=10.0) is None


@pytest.mark.parametrize(
    ("update", "max_norm", "reason"),
    [
        (adapter(float("nan")), 0.0, "NaN or Inf"),
        (adapter(float("inf")), 0.0, "NaN or Inf"),
        (adapter(1000.0), 10.0, "exceeds max-update-norm"),
        (ArrayRecord([np.zeros((3, 2), dtype=np.float32)]), 0.0, "shape/dtype"),
        (ArrayRecord([np.zeros((2, 3), dtype=np.float64)]), 0.0, "shape/dtype"),
        (ArrayRecord({"other": adapter(0.0)["0"]}), 0.0, "names differ"),
    ],
)
def test_invalid_updates_are_explained(update: ArrayRecord, max_norm: float, reason: str) -> None:
    found = check_update(update, adapter(0.0), max_norm)
    assert found is not None and reason in found


@pytest.mark.parametrize("base", [FedAvg, FedMedian])
def test_guarded_strategy_aggregates_only_valid_updates(base: type[FedAvg]) -> None:
    strategy = guarded(base)(min_available_nodes=1)
    assert isinstance(strategy, base)
    ledgers: list[RoundLedger] = []
    strategy.on_round = lambda _round, ledger: ledgers.append(ledger)  # type: ignore[method-assign]
    strategy.max_update_norm = 100.0
    strategy._sent = adapter(0.0)  # what configure_train sent this round
    strategy._ledger = RoundLedger(sampled=4)
    replies = [
        reply(1, adapter(1.0)),
        reply(2, adapter(3.0)),
        reply(3, adapter(float("nan"))),
        reply(4, adapter(1e6)),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    aggregated = arrays.to_numpy_ndarrays()[0]
    assert np.isfinite(aggregated).all()
    assert 1.0 <= aggregated.max() <= 3.0
    assert [node for node, _ in ledgers[0].rejected] == [3, 4]
    assert (ledgers[0].sampled, ledgers[0].replied, ledgers[0].failed) == (4, 4, 0)


def test_missing_replies_count_as_failures() -> None:
    strategy = guarded(FedAvg)()
    ledgers: list[RoundLedger] = []
    strategy.on_round = lambda _round, ledger: ledgers.append(ledger)  # type: ignore[method-assign]
    strategy._sent, strategy._ledger = adapter(0.0), RoundLedger(sampled=3)
    strategy.aggregate_train(1, [reply(1, adapter(1.0)), reply(2, adapter(1.0))])
    assert (ledgers[0].replied, ledgers[0].failed) == (2, 1)


def test_a_rejection_names_the_site_in_history_log_and_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / audit.AUDIT_FILE))
    history = History(tmp_path, {7: "hospital-a"}.__getitem__)
    history.on_round(3, RoundLedger(sampled=2, replied=2, rejected=[(7, "contains NaN")]))
    record = history.close_round(3, {})
    assert record["rejected"] == [{"node": 7, "site": "hospital-a", "reason": "contains NaN"}]
    assert "round 3: update from hospital-a (node 7) rejected: contains NaN" in caplog.text
    [entry] = audit.read(tmp_path / audit.AUDIT_FILE)
    assert (entry["event"], entry["node"], entry["node_id"]) == ("update-rejected", "hospital-a", 7)

import flwr.serverapp.strategy as flower
import pytest
from flwr.app import MetricRecord, RecordDict

from fedllm.settings import STRATEGIES, RunSettings
from superlink.strategy import make_strategy, recording


def ignore(*_: object) -> None:
    return None


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_is_flowers_own(name: str) -> None:
    strategy = make_strategy(RunSettings(strategy=name, min_nodes=3), ignore, ignore, ignore)
    expected = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam",
                "fedyogi": "FedYogi", "fedadagrad": "FedAdagrad", "fedavgm": "FedAvgM",
                "fedmedian": "FedMedian", "fedtrimmedavg": "FedTrimmedAvg", "krum": "Krum",
                "bulyan": "Bulyan"}  # fmt: skip
    assert type(strategy).__mro__[2] is getattr(flower, expected[name])
    assert strategy.min_available_nodes == 3


def test_strategy_options_reach_the_strategy() -> None:
    prox = make_strategy(RunSettings(strategy="fedprox", proximal_mu=0.3), ignore, ignore, ignore)
    assert isinstance(prox, flower.FedProx) and prox.proximal_mu == 0.3
    avgm = make_strategy(
        RunSettings(strategy="fedavgm", server_lr=2.0, server_momentum=0.5), ignore, ignore, ignore
    )
    assert isinstance(avgm, flower.FedAvgM)
    assert (avgm.server_learning_rate, avgm.server_momentum) == (2.0, 0.5)
    adam = make_strategy(RunSettings(strategy="fedadam", server_lr=0.05), ignore, ignore, ignore)
    assert isinstance(adam, flower.FedAdam) and adam.eta == 0.05


def test_recording_aggregates_weighted_and_reports() -> None:
    seen: list[MetricRecord] = []
    aggregate = recording(lambda records, aggregated: seen.append(aggregated))
    replies = [
        RecordDict({"metrics": MetricRecord({"train-loss": 1.0, "num-examples": 10})}),
        RecordDict({"metrics": MetricRecord({"train-loss": 4.0, "num-examples": 30})}),
    ]
    result = aggregate(replies, "num-examples")
    assert result["train-loss"] == pytest.approx(3.25)
    assert seen == [result]

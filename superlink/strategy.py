"""Flower's own aggregation strategies, chosen by name from the run settings."""

from collections.abc import Callable
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedllm.privacy.dp import SITE_WEIGHT
from fedllm.rundir.ledger import RoundLedger
from fedllm.settings import RunSettings
from superlink.site_dp import EXACTLY_MIN_NODES, site_level_dp
from superlink.update_guard import UpdateGuard, guarded

MetricsHook = Callable[[list[RecordDict], MetricRecord], None]

CLASSES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedavgm": FedAvgM,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "bulyan": Bulyan,
}


def strategy_options(run: RunSettings) -> dict[str, Any]:
    """Keyword arguments specific to the chosen strategy."""
    name = run.strategy
    if name == "fedprox":
        return {"proximal_mu": run.proximal_mu}
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        return {"eta_l": run.lr} | ({"eta": run.server_lr} if run.server_lr else {})
    if name == "fedavgm":
        return {
            "server_learning_rate": run.server_lr or 1.0,
            "server_momentum": run.server_momentum,
        }
    if name == "fedtrimmedavg":
        return {"beta": run.trim_beta}
    if name in ("krum", "bulyan"):
        return {"num_malicious_nodes": run.num_malicious}
    return {}


def recording(hook: MetricsHook) -> Callable[[list[RecordDict], str], MetricRecord]:
    """Flower's weighted metric aggregation, also handing the result to `hook`."""

    def aggregate(records: list[RecordDict], weighting_key: str) -> MetricRecord:
        aggregated = aggregate_metricrecords(records, weighting_key)
        hook(records, aggregated)
        return aggregated

    return aggregate


def make_strategy(
    run: RunSettings,
    on_train: MetricsHook,
    on_evaluate: MetricsHook,
    on_round: Callable[[int, RoundLedger], None],
) -> Strategy:
    """The configured `flwr.serverapp.strategy`, guarded (or DP-wrapped), reporting metrics."""
    common: dict[str, Any] = {
        "fraction_train": run.fraction_train,
        "fraction_evaluate": run.fraction_evaluate,
        "min_train_nodes": run.min_nodes,
        "min_evaluate_nodes": run.min_nodes if run.fraction_evaluate > 0 else 0,
        "min_available_nodes": run.min_nodes,
        "train_metrics_aggr_fn": recording(on_train),
        "evaluate_metrics_aggr_fn": recording(on_evaluate),
    }
    if run.dp in ("server", "client"):
        common |= {"fraction_train": EXACTLY_MIN_NODES, "weighted_by_key": SITE_WEIGHT}
        return site_level_dp(run, FedAvg(**common))
    strategy = guarded(CLASSES[run.strategy])(**common, **strategy_options(run))
    assert isinstance(strategy, UpdateGuard)
    strategy.max_update_norm = run.max_update_norm
    strategy.on_round = on_round
    return strategy

"""What people read about privacy: round lines, the summary, and the strategy a DP run gets."""

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)

from fedllm.orchestration.progress import round_line
from fedllm.orchestration.summary import privacy_spent
from fedllm.settings import RunSettings
from superlink.strategy import make_strategy
from superlink.update_guard import UpdateGuard

NODES = [
    {"site": "node-1", "dp-epsilon": 0.91, "dp-delta": 1e-4},
    {"site": "node-2", "dp-epsilon": 0.93, "dp-delta": 1e-4},
    {"site": "node-3"},
]
ROW = {
    "round": 1,
    "exchanges": {"train": {"nodes": NODES}},
    "refused": [{"node": 7, "site": "node-3", "reason": "site policy: ..."}],
}


def test_a_round_line_names_each_sites_epsilon_and_who_refused() -> None:
    line = round_line(ROW, 3)
    assert "ε node-1 0.91 node-2 0.93 (δ 1e-04)" in line
    assert "refused node-3" in line
    assert "ε 2.24 (δ 3e-02)" in round_line(
        {"round": 1, "privacy": {"epsilon": 2.24, "delta": 1 / 30}}, 3
    )


def test_the_summary_keeps_each_sites_last_figure() -> None:
    later = {"round": 2, "exchanges": {"train": {"nodes": [{"site": "node-1", "dp-epsilon": 1.5,
                                                          "dp-delta": 1e-4}]}}}  # fmt: skip
    assert privacy_spent([ROW, later]) == "node-1 ε 1.50 δ 1e-04, node-2 ε 0.93 δ 1e-04"
    assert privacy_spent([{"round": 1}]) == ""


def hooks() -> dict:
    return {
        "on_train": lambda *_: None,
        "on_evaluate": lambda *_: None,
        "on_round": lambda *_: None,
    }


def test_site_level_dp_wraps_plain_fedavg_with_flowers_accountant() -> None:
    run = RunSettings(dp="server", dp_noise=1.0, dp_epsilon=8.0, min_nodes=3)
    strategy = make_strategy(run, **hooks())
    assert isinstance(strategy, DifferentialPrivacyServerSideFixedClipping)
    assert type(strategy.strategy) is FedAvg and strategy.num_sampled_clients == 3
    assert strategy.accountant is not None
    config = strategy.accountant.config
    assert (config.max_epsilon, config.population_size) == (8.0, 3)
    assert config.target_delta == 1 / 30
    client = make_strategy(RunSettings(dp="client", dp_noise=1.0), **hooks())
    assert isinstance(client, DifferentialPrivacyClientSideFixedClipping)
    assert isinstance(make_strategy(RunSettings(dp="sgd", dp_epsilon=3.0), **hooks()), UpdateGuard)

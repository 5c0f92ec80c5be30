import tomllib
from pathlib import Path

import pytest

from fedllm.errors import FedllmError
from fedllm.settings import NodeSettings, RunSettings, build, from_flower_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_matches_settings_defaults() -> None:
    """The Flower App's run-config defaults and RunSettings never drift apart."""
    app_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app_config["config"] == RunSettings().to_run_config()


def test_flower_config_with_dashed_keys() -> None:
    run = from_flower_config(RunSettings, {"num-server-rounds": 5, "lr": 0.01, "other": 1})
    assert run.num_server_rounds == 5
    assert run.lr == 0.01


def test_node_settings_from_node_config() -> None:
    node = from_flower_config(NodeSettings, {"partition-id": 2, "num-partitions": 3})
    assert (node.partition_id, node.num_partitions, node.data_path) == (2, 3, None)


def test_env_prefix_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLLM_LR", "0.002")
    monkeypatch.setenv("FEDLLM_NODE_THREADS", "3")
    assert RunSettings().lr == 0.002
    assert NodeSettings().threads == 3
    assert build(RunSettings, lr=0.1).lr == 0.1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"lr": "abc"}, "'lr'"),
        ({"strategy": "fedsgd"}, "'strategy'"),
        ({"num_server_rounds": 0}, "'num-server-rounds'"),
        ({"lora_dropout": 1.5}, "'lora-dropout'"),
        ({"quantization": "2bit"}, "'quantization'"),
    ],
)
def test_invalid_values_fail_in_one_line_naming_the_field(
    values: dict[str, object], field: str
) -> None:
    with pytest.raises(FedllmError) as caught:
        build(RunSettings, **values)
    message = str(caught.value)
    assert field in message
    assert "\n" not in message

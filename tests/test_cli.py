"""Bad input: one line on stderr, a non-zero exit, nothing started or overwritten."""

from pathlib import Path

import pandas as pd
import pytest

from tests.cli import assert_one_line_error, fedllm


@pytest.fixture
def local(demo_assets: tuple[Path, Path], tmp_path: Path) -> list[str]:
    return ["--model", str(demo_assets[0]), "--run-dir", str(tmp_path / "run")]


def test_unknown_strategy(local: list[str], demo_assets: tuple[Path, Path]) -> None:
    result = fedllm("up", *local, "--dataset", str(demo_assets[1]), "--strategy", "fedsgd")
    assert_one_line_error(result, "'strategy'", "fedsgd")


def test_non_numeric_learning_rate(local: list[str], demo_assets: tuple[Path, Path]) -> None:
    result = fedllm("up", *local, "--dataset", str(demo_assets[1]), "--set", "lr=fast")
    assert_one_line_error(result, "'lr'")
    result = fedllm("up", *local, "--dataset", str(demo_assets[1]), env={"FEDLLM_LR": "fast"})
    assert_one_line_error(result, "'lr'")


def test_missing_data_file(local: list[str], tmp_path: Path) -> None:
    result = fedllm("up", *local, "--dataset", str(tmp_path / "absent.parquet"))
    assert_one_line_error(result, "not found", "absent.parquet")


def test_data_file_without_label_column(local: list[str], tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": ["good film"] * 20}).to_csv(path, index=False)
    assert_one_line_error(fedllm("up", *local, "--dataset", str(path)), "'label'")
    assert not (tmp_path / "run").exists()


def test_hub_defaults_without_hub_access_say_how_to_go_local(local: list[str]) -> None:
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = fedllm("up", "--run-dir", local[-1], env=offline)
    assert_one_line_error(result, "'gpt2'", "--model PATH")
    result = fedllm("up", *local, env=offline)
    assert_one_line_error(result, "'stanfordnlp/imdb'", "--dataset PATH")


def test_unknown_set_key_and_bad_option(local: list[str]) -> None:
    assert_one_line_error(fedllm("up", *local, "--set", "speed=2"), "speed")
    assert_one_line_error(fedllm("up", "--nodes", "many"), "--nodes")


def test_predict_without_a_finished_run(tmp_path: Path) -> None:
    assert_one_line_error(fedllm("predict", "--run-dir", str(tmp_path), "text"), "final adapter")

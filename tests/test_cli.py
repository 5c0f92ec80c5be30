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


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["dp=sgd", "dp-epsilon=3", "dp-delta=1"], "'dp-delta'"),
        (["dp=server", "dp-noise=1", "strategy=krum"], "fedavg only"),
        (["secure-aggregation=secaggplus", "secagg-threshold=4"], "above the 3 sites"),
        (["secure-aggregation=secaggplus", "strategy=krum"], "strategy krum"),
        (["secure-aggregation=secaggplus", "dp=server", "dp-noise=1"], "dp=server"),
    ],
)
def test_privacy_settings_that_cannot_apply(
    local: list[str], demo_assets: tuple[Path, Path], sets: list[str], message: str
) -> None:
    pairs = [word for pair in sets for word in ("--set", pair)]
    result = fedllm("up", *local, "--dataset", str(demo_assets[1]), *pairs)
    assert_one_line_error(result, message)


def test_predict_without_a_finished_run(tmp_path: Path) -> None:
    assert_one_line_error(fedllm("predict", "--run-dir", str(tmp_path), "text"), "final adapter")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot be read"),
        (b"text,label\n\xff\xfe bad bytes,1\n", "cannot be read"),
        (None, "is a directory"),
    ],
    ids=["empty-file", "not-utf8", "directory"],
)
def test_unreadable_data_files(
    local: list[str], tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "reviews.csv"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert_one_line_error(fedllm("up", *local, "--dataset", str(path)), message)


def test_model_directory_without_config(demo_assets: tuple[Path, Path], tmp_path: Path) -> None:
    empty = tmp_path / "model"
    empty.mkdir()
    result = fedllm("up", "--model", str(empty), "--dataset", str(demo_assets[1]),
                    "--run-dir", str(tmp_path / "run"))  # fmt: skip
    assert_one_line_error(result, "has no config.json")


def test_truncated_checkpoint_is_refused_and_left_alone(
    local: list[str], demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "round-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text('{"round": 1}')
    (checkpoint / "adapter.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    before = (checkpoint / "adapter.safetensors").read_bytes()
    result = fedllm("up", *local, "--dataset", str(demo_assets[1]), "--resume")
    assert_one_line_error(result, "cannot be read")
    assert (checkpoint / "adapter.safetensors").read_bytes() == before

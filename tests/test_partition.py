from pathlib import Path

import pandas as pd
import pytest

from fedllm.errors import FedllmError
from fedllm.learning.data import read_table
from fedllm.learning.partition import node_data, server_holdout
from fedllm.settings import NodeSettings, RunSettings


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    rows = [{"text": f"review number {index}", "label": index % 2} for index in range(300)]
    path = tmp_path / "reviews.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def texts(run: RunSettings, partition: int, partitions: int) -> list[str]:
    node = NodeSettings(partition_id=partition, num_partitions=partitions)
    return list(node_data(run, node)["text"])


def test_iid_partitions_are_disjoint_and_cover_the_pool(reviews: Path) -> None:
    run = RunSettings(dataset=str(reviews), eval_fraction=0.2)
    parts = [texts(run, index, 3) for index in range(3)]
    held_out = set(server_holdout(run)["text"])
    seen = [text for part in parts for text in part]
    assert len(seen) == len(set(seen)) == 240
    assert held_out.isdisjoint(seen)
    assert len(held_out) == 60
    assert all(abs(len(part) - 80) <= 1 for part in parts)


def test_dirichlet_partitions_skew_labels(reviews: Path) -> None:
    run = RunSettings(dataset=str(reviews), partitioner="dirichlet", dirichlet_alpha=0.1)
    shares = []
    for index in range(3):
        node = NodeSettings(partition_id=index, num_partitions=3)
        labels = list(node_data(run, node)["label"])
        shares.append(sum(labels) / len(labels))
    assert max(shares) - min(shares) > 0.3


def test_partitions_are_reproducible(reviews: Path) -> None:
    run = RunSettings(dataset=str(reviews), partitioner="dirichlet")
    assert texts(run, 1, 3) == texts(run, 1, 3)


def test_site_data_path_overrides_the_federation_dataset(reviews: Path, tmp_path: Path) -> None:
    own = tmp_path / "site.jsonl"
    pd.DataFrame({"text": ["mine a", "mine b"], "label": [0, 1]}).to_json(
        own, orient="records", lines=True
    )
    node = NodeSettings(data_path=own)
    assert list(node_data(RunSettings(dataset=str(reviews)), node)["text"]) == ["mine a", "mine b"]


def test_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["good", "bad"], "label": [1, 0], "extra": [1, 2]}).to_csv(path)
    assert read_table(path).column_names == ["text", "label"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"text": ["a"], "stars": [1]}), "no 'label' column"),
        (pd.DataFrame({"review": ["a"], "label": [1]}), "no 'text' column"),
        (pd.DataFrame({"text": ["a"], "label": [7]}), "must be 0 or 1"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, frame: pd.DataFrame, message: str) -> None:
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(FedllmError, match=message):
        read_table(path)


def test_rows_without_text_or_label_are_dropped_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "half.parquet"
    texts = ["good", None, "  ", "bad", "fine", "meh"]
    labels = [1, 0, 1, None, 1, 0]
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)
    assert list(read_table(path)["text"]) == ["good", "fine", "meh"]
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"fedllm: data file {path}: dropped 3 of 6 rows (2 without text, 1 without a label)"
    ]
    pd.DataFrame({"text": [None, ""], "label": [1, 0]}).to_parquet(path)
    with pytest.raises(FedllmError, match="no row has both a text and a label"):
        read_table(path)


def test_missing_file_and_bad_partition_id(reviews: Path, tmp_path: Path) -> None:
    with pytest.raises(FedllmError, match="not found"):
        read_table(tmp_path / "absent.parquet")
    with pytest.raises(FedllmError, match="partition-id"):
        node_data(RunSettings(dataset=str(reviews)), NodeSettings(partition_id=3, num_partitions=3))

"""Labelled review tables: a local parquet/csv/jsonl file or a Hugging Face hub dataset."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedllm.errors import FedllmError

if TYPE_CHECKING:  # pandas and datasets load in seconds: only where tables are read
    import pandas as pd
    from datasets import Dataset

FILE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")
COLUMNS = ("text", "label")


def is_local(source: str) -> bool:
    """A dataset setting names a local file when it exists or looks like one."""
    return Path(source).expanduser().exists() or source.endswith(FILE_SUFFIXES)


def read_table(path: str | Path) -> "Dataset":
    """Read a `text`,`label` file; labels must be 0 or 1."""
    import pandas as pd
    from datasets import Dataset

    file = Path(path).expanduser()
    if file.is_dir():
        raise FedllmError(
            f"data file {file} is a directory: name one .parquet, .csv or .jsonl file"
        )
    if not file.is_file():
        raise FedllmError(f"data file not found: {file}")
    try:
        if file.suffix == ".parquet":
            frame = pd.read_parquet(file)
        elif file.suffix == ".csv":
            frame = pd.read_csv(file)
        elif file.suffix in (".jsonl", ".json"):
            frame = pd.read_json(file, lines=file.suffix == ".jsonl")
        else:
            raise FedllmError(f"data file {file}: use .parquet, .csv or .jsonl")
    except (ValueError, OSError) as err:
        raise FedllmError(f"data file {file} cannot be read: {err}") from None
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise FedllmError(
            f"data file {file} has no {missing[0]!r} column (columns: {', '.join(frame.columns)})"
        )
    frame = usable_rows(frame[list(COLUMNS)], file)
    if not frame["label"].isin([0, 1]).all():
        raise FedllmError(f"data file {file}: 'label' must be 0 or 1")
    frame["text"] = frame["text"].astype(str)
    frame["label"] = frame["label"].astype("int64")
    return Dataset.from_pandas(frame, preserve_index=False)


def usable_rows(frame: "pd.DataFrame", file: Path) -> "pd.DataFrame":
    """Rows with a text and a label; says in one line (stderr) how many were dropped and why,
    and refuses a file with none left."""
    no_text = frame["text"].isna() | (frame["text"].astype(str).str.strip() == "")
    no_label = frame["label"].isna()
    kept = frame[~(no_text | no_label)]
    if len(kept) < len(frame):
        reasons = [f"{int(count)} without {what}" for what, count in
                   (("text", no_text.sum()), ("a label", no_label.sum())) if count]  # fmt: skip
        print(
            f"fedllm: data file {file}: dropped {len(frame) - len(kept)} of {len(frame)} rows"
            f" ({', '.join(reasons)})",
            file=sys.stderr,
            flush=True,
        )
    if len(kept) == 0:
        raise FedllmError(f"data file {file}: no row has both a text and a label")
    return kept


def split_holdout(table: "Dataset", fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
    """Split a local table into (pool the nodes partition, part held out for the server)."""
    if len(table) < 4:
        raise FedllmError(f"dataset has {len(table)} rows: too few to split")
    parts = table.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def load_hub_split(hub_id: str, split: str) -> "Dataset":
    """Load one split from the hub, or explain how to work offline."""
    from datasets import Dataset, load_dataset

    try:
        table = load_dataset(hub_id, split=split)
    except Exception as err:  # the hub client raises many types when offline
        raise FedllmError(hub_hint(f"dataset {hub_id!r}", "--dataset", err)) from None
    assert isinstance(table, Dataset)
    return table


def hub_hint(what: str, flag: str, err: Exception) -> str:
    """One line saying a hub download failed and how to use a local path instead."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (
        f"cannot load {what} from the Hugging Face hub ({reason[:160]}); "
        f"without hub access pass a local path: {flag} PATH"
    )

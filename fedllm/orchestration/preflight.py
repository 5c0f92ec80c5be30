"""Checks `fedllm up` makes before starting any process, so bad input fails in one line."""

from pathlib import Path

from transformers import AutoConfig

from fedllm.errors import FedllmError
from fedllm.learning.data import hub_hint, is_local, load_hub_split, read_table
from fedllm.settings import RunSettings

MIN_ROWS_PER_NODE = 4


def check_run(run: RunSettings, nodes: int) -> None:
    """The model and dataset can be loaded and the data suffice for `nodes` nodes."""
    if nodes < run.min_nodes:
        raise FedllmError(
            f"invalid setting 'min-nodes': {run.min_nodes} exceeds the {nodes} nodes started"
        )
    if Path(run.model).is_dir() and not (Path(run.model) / "config.json").is_file():
        raise FedllmError(f"model directory {run.model} has no config.json")
    try:
        AutoConfig.from_pretrained(run.model)
    except (OSError, ValueError) as err:
        raise FedllmError(hub_hint(f"model {run.model!r}", "--model", err)) from None
    if is_local(run.dataset):
        rows = len(read_table(run.dataset))
        if rows * (1 - run.eval_fraction) < nodes * MIN_ROWS_PER_NODE:
            raise FedllmError(f"data file {run.dataset} has {rows} rows: too few for {nodes} nodes")
    else:
        load_hub_split(run.dataset, "test")


def check_certs(certs: Path) -> None:
    """An existing PKI directory has what the local federation needs."""
    needed = ("ca.crt", "ca.crl", "superlink.crt", "superlink.key", "operator.crt", "operator.key")
    missing = [name for name in needed if not (certs / name).is_file()]
    if missing:
        raise FedllmError(f"certificate directory {certs} lacks {', '.join(missing)}")

"""The finished run's summary: human units, where the adapter is, how to use it."""

from pathlib import Path

import pytest
from rich.console import Console

from fedllm.orchestration.summary import human_duration, print_summary
from fedllm.settings import RunSettings


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.04, "0.0 s"), (47.74, "47.7 s"), (59.96, "1 min 0 s"), (72.4, "1 min 12 s"),
     (3599.6, "1 h 0 min"), (7530, "2 h 5 min")],
)  # fmt: skip
def test_durations_read_as_people_write_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_the_summary_names_the_adapter_and_the_command_that_uses_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "my runs" / "run"
    run = RunSettings(run_dir=str(run_dir), num_server_rounds=2)
    history = [{"round": 2, "centralized": {"accuracy": 0.9625, "f1": 0.96}}]
    console = Console(record=True, width=200)
    summary = print_summary(run, 7, history, 72.4, console)
    text = console.export_text()
    assert "1 min 12 s" in text and "72.4" not in text
    assert "0.9625" in text and str(run_dir / "final") in text
    assert f"fedllm predict --run-dir '{run_dir}' " in text  # quoted: the path has a space
    assert summary["final-accuracy"] == 0.9625 and summary["seconds"] == 72.4

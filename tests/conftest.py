"""Shared offline fixtures: a tiny GPT-2 with its tokenizer and synthetic reviews."""

import os
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fedllm.cli.demo import write_demo_assets

# The suite never touches the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model directory, reviews.parquet) written once per session."""
    return write_demo_assets(tmp_path_factory.mktemp("demo"), reviews=240)


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need the identity of the task that creates them (normally the ServerApp)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)

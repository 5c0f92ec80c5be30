"""Shared offline fixtures: a tiny GPT-2 with its tokenizer and synthetic reviews."""

import os
from pathlib import Path

import pytest

from fedllm.demo import write_demo_assets

# The suite never touches the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model directory, reviews.parquet) written once per session."""
    return write_demo_assets(tmp_path_factory.mktemp("demo"), reviews=240)

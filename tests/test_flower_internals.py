"""Flower's version is checked once, when the patches are imported, naming what to re-read."""

import subprocess
import sys

import flwr
import pytest

import fedllm.flower_internals as patches


def test_the_pinned_flower_is_supported() -> None:
    patches.check_version(flwr.__version__)


def test_importing_under_another_flower_fails_naming_the_files() -> None:
    code = "import flwr; flwr.__version__ = '1.43.0'; import fedllm.flower_internals"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "UnsupportedFlower" in result.stderr and "found flwr 1.43.0" in result.stderr
    for flower_file in patches.FLOWER_FILES.values():
        assert flower_file in result.stderr


def test_a_patch_refuses_code_it_has_not_read() -> None:
    with pytest.raises(patches.UnsupportedFlower, match="re-check the sleeps in flwr/supernode"):
        patches.require("polling", False, "the sleeps")

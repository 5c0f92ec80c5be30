"""The tools scripts/deploy-tools.sh installs: found, or the test skips (fails under CI)."""

import importlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest


def missing(what: str) -> None:
    """Skip, or fail under CI, for a tool that scripts/deploy-tools.sh installs."""
    message = f"{what} is not installed: run scripts/deploy-tools.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    """A pinned tool from this virtual environment first, then from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        missing(name)
    assert found is not None
    return found


def library(name: str) -> ModuleType:
    """A Python package that scripts/deploy-tools.sh installs."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(name)
        raise


def run(*command: str, env: Mapping[str, str] | None = None) -> str:
    """Run a tool; fail with its output when it exits non-zero."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout

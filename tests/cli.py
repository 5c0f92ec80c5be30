"""Running the real `fedllm` command line from tests."""

import os
import subprocess
import sys


def fedllm(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m fedllm ARGS` with this interpreter; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "fedllm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A non-zero exit with exactly one `fedllm: error:` line naming every needle."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fedllm: error:")
    for needle in needles:
        assert needle in lines[0]

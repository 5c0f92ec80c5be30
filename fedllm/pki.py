"""Locating and running the OpenSSL PKI tooling shipped in `certs/`."""

import subprocess
from pathlib import Path

from fedllm.errors import FedllmError


def tool_dir() -> Path:
    """`certs/` in a source checkout, or its copy inside an installed wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "pki", package.parent / "certs"):
        if (candidate / "generate.sh").is_file():
            return candidate
    raise FedllmError("certs/generate.sh not found: reinstall fedllm")


def generate(target: Path, nodes: list[str]) -> None:
    """Create a whole federation PKI in `target` (CA, SuperLink, operator, one cert per node)."""
    result = subprocess.run(
        ["bash", str(tool_dir() / "generate.sh"), str(target), *nodes],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise FedllmError(f"PKI generation failed: {lines[-1] if lines else result.returncode}")

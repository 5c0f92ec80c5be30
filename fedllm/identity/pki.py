"""Locating and running the OpenSSL PKI tooling shipped in `certs/`."""

import subprocess
from pathlib import Path

from fedllm.errors import FedllmError


def tool_dir() -> Path:
    """`certs/` in a source checkout, or its copy inside an installed wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "certs", package.parents[1] / "certs"):
        if (candidate / "generate.sh").is_file():
            return candidate
    raise FedllmError("certs/generate.sh not found: reinstall fedllm")


def generate(target: Path, nodes: list[str]) -> None:
    """Create a whole federation PKI in `target` (CA, SuperLink, operator, one cert per node)."""
    _run("generate.sh", str(target), *nodes)


def ensure(target: Path, nodes: list[str]) -> list[str]:
    """A PKI in `target` with a certificate for every node; returns what was done.

    An empty `target` gets a whole PKI. One that holds a CA keeps it: only the nodes
    without a certificate get one (key + request, signed by that CA). Nothing is overwritten.
    """
    if not (target / "ca.crt").exists():
        generate(target, nodes)
        return [f"PKI created in {target}: CA, superlink, operator, {', '.join(nodes)}"]
    missing = [name for name in nodes if not (target / f"{name}.crt").exists()]
    for name in missing:
        _run("site-request.sh", str(target), name)
        _run("sign-csr.sh", str(target), str(target / f"{name}.csr"), name)
    issued = f"; issued {', '.join(missing)}" if missing else ""
    return [f"PKI in {target} kept{issued}"]


def _run(script: str, *args: str) -> None:
    result = subprocess.run(
        ["bash", str(tool_dir() / script), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise FedllmError(f"PKI: {script} failed: {lines[-1] if lines else result.returncode}")

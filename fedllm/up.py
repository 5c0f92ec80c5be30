"""`fedllm up`: a whole federation on this machine, from PKI to final adapter."""

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedllm import pki
from fedllm.errors import FedllmError
from fedllm.federation import LocalFederation
from fedllm.preflight import check_certs, check_run
from fedllm.progress import follow
from fedllm.settings import RunSettings
from superlink.checkpoint import guard_fresh
from superlink.history import write_status

APP_DIR = Path(__file__).resolve().parent.parent


def node_configs(nodes: int, threads: int) -> list[dict[str, Any]]:
    """Node config per SuperNode: its partition and a fair share of the CPU."""
    share = threads or max(1, (os.cpu_count() or 1) // nodes)
    return [
        {"partition-id": index, "num-partitions": nodes, "threads": share} for index in range(nodes)
    ]


def up(
    run: RunSettings,
    nodes: int,
    certs: Path | None,
    threads: int,
    timeout: float,
    console: Console,
) -> dict[str, Any]:
    """Validate, start the federation, submit the run, follow it, stop everything."""
    run_dir = Path(run.run_dir)
    if not run.resume:
        guard_fresh(run_dir)
    check_run(run, nodes)
    state = run_dir / "state"
    if certs is None:
        certs = state / "pki"
        if not (certs / "ca.crt").exists():
            pki.generate(certs, [f"node-{index + 1}" for index in range(nodes)])
    check_certs(certs)
    started = time.monotonic()
    with LocalFederation(state, certs, node_configs(nodes, threads)) as federation:
        console.print(f"SuperLink gateway on {federation.address} (mutual TLS), {nodes} SuperNodes")
        write_status(run_dir, "submitted")
        run_id = federation.submit(APP_DIR, run.to_run_config())
        console.print(f"run {run_id} submitted; logs in {state / 'logs'}")

        def check_alive() -> None:
            if dead := federation.dead():
                raise FedllmError(f"{', '.join(dead)} exited; see {state / 'logs'}")

        history = follow(run_dir, run.num_server_rounds, console, check_alive, timeout)
    summary = {
        "run-id": run_id,
        "rounds": run.num_server_rounds,
        "final-accuracy": history[-1].get("centralized", {}).get("accuracy"),
        "final-f1": history[-1].get("centralized", {}).get("f1"),
        "adapter": str(run_dir / "final"),
        "run-dir": str(run_dir),
        "seconds": round(time.monotonic() - started, 1),
    }
    table = Table(title="fedllm run finished", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    return summary

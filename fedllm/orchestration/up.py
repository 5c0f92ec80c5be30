"""`fedllm up`: a whole federation on this machine, from PKI to final adapter."""

import os
import shlex
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedllm.errors import Stopped
from fedllm.identity import pki
from fedllm.orchestration.federation import LocalFederation
from fedllm.orchestration.preflight import check_certs, check_run
from fedllm.orchestration.summary import print_summary
from fedllm.orchestration.supervisor import run_job
from fedllm.rundir.checkpoint import completed_rounds, guard_fresh, load_last_checkpoint
from fedllm.rundir.history import write_status
from fedllm.settings import RunSettings
from fedllm.telemetry.exporter import check_free
from fedllm.telemetry.prometheus import local_prometheus, prometheus_binary

APP_DIR = Path(__file__).resolve().parents[2]


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
    metrics_port: int = 0,
    prometheus_port: int | None = None,
) -> dict[str, Any]:
    """Validate, start the federation, submit the run, follow it, stop everything.

    Every role serves Prometheus metrics (SuperLink on `metrics_port`, node k on
    `metrics_port` + k, free ports when 0); with `prometheus_port`, Debian's prometheus
    scrapes them for as long as the federation runs.
    """
    if prometheus_port is not None:
        prometheus_binary()
    if metrics_port:
        check_free("127.0.0.1", range(metrics_port, metrics_port + nodes + 1))
    run_dir = Path(run.run_dir)
    if run.resume:
        load_last_checkpoint(run_dir)  # fails in one line when there is nothing to resume
    else:
        guard_fresh(run_dir)
    check_run(run, nodes)
    state = run_dir / "state"
    if certs is None:
        certs = state / "pki"
        if not (certs / "ca.crt").exists():
            pki.generate(certs, [f"node-{index + 1}" for index in range(nodes)])
    check_certs(certs)
    started = time.monotonic()
    with (
        LocalFederation(state, certs, node_configs(nodes, threads), metrics_port) as federation,
        local_prometheus(
            state / "prometheus", federation.metrics_targets(), prometheus_port, console
        ),
    ):
        console.print(f"SuperLink gateway on {federation.address} (mutual TLS), {nodes} SuperNodes")
        run_id, history = run_job(federation, run, APP_DIR, console, timeout)
    return print_summary(run, run_id, history, time.monotonic() - started, console)


def stopped_run(run: RunSettings, argv: list[str], sigint: bool) -> Stopped:
    """Record a run a signal stopped (status `stopped`) and say how to resume it: the same
    command with `--run-dir` and `--resume`. SIGINT exits 130, SIGTERM (a requested stop) 0."""
    name = "SIGINT" if sigint else "SIGTERM"
    run_dir = Path(run.run_dir)
    done = completed_rounds(run_dir) if run_dir.is_dir() else []
    if run_dir.is_dir():
        write_status(run_dir, "stopped", signal=name, rounds=done[-1] if done else 0)
    command = [arg for arg in argv if arg != "--resume"]
    if "--run-dir" not in command:
        command += ["--run-dir", str(run_dir)]
    where = f"after round {done[-1]} of {run.num_server_rounds}" if done else "before round 1"
    line = (
        f"stopped by {name} {where}; every started process was stopped;"
        f" resume with: {shlex.join(['fedllm', *command, '--resume'])}"
    )
    return Stopped(line, 130 if sigint else 0)

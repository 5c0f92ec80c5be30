"""Following a run from its run directory: per-round lines and a progress bar."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedllm.errors import FedllmError
from fedllm.rundir.history import read_history, read_status


def round_line(row: dict[str, Any], total: int) -> str:
    """`round k/R  accuracy ...  loss ...` for one history row."""
    central = row.get("centralized", {})
    parts = [f"round {row['round']}/{total}"]
    if central:
        parts.append(f"accuracy {central['accuracy']:.4f}  f1 {central['f1']:.4f}")
        parts.append(f"loss {central['loss']:.4f}")
    if "federated" in row:
        parts.append(f"federated accuracy {row['federated'].get('eval-accuracy', 0.0):.4f}")
    if "train" in row:
        parts.append(f"train loss {row['train'].get('train-loss', 0.0):.4f}")
    parts += privacy_parts(row)
    if "secure-round-failed" in row:
        parts.append(row["secure-round-failed"])
    return "  ".join(parts)


def privacy_parts(row: dict[str, Any]) -> list[str]:
    """(ε, δ) spent so far: per site (DP-SGD), or of the aggregate; refusals by site."""
    nodes = row.get("exchanges", {}).get("train", {}).get("nodes", [])
    spent = [node for node in nodes if "dp-epsilon" in node]
    parts = []
    if spent:
        sites = " ".join(f"{node['site']} {node['dp-epsilon']:.2f}" for node in spent)
        parts.append(f"ε {sites} (δ {spent[0]['dp-delta']:.0e})")
    if "privacy" in row:
        parts.append(f"ε {row['privacy']['epsilon']:.2f} (δ {row['privacy']['delta']:.0e})")
    if row.get("refused"):
        parts.append("refused " + ", ".join(entry["site"] for entry in row["refused"]))
    return parts


def follow(
    run_dir: Path,
    total: int,
    console: Console,
    check_alive: Callable[[], None],
    timeout: float,
) -> list[dict[str, Any]]:
    """Show rounds as the ServerApp records them; return the history when the run finishes."""
    shown = {row["round"] for row in read_history(run_dir)}
    deadline = time.monotonic() + timeout
    columns = (TextColumn("[bold]federated rounds"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("rounds", total=total, completed=len(shown - {0}))
        while True:
            history = read_history(run_dir)
            for row in history:
                if row["round"] not in shown and row["round"] > 0:
                    shown.add(row["round"])
                    console.print(round_line(row, total))
            bar.update(task, completed=len(shown - {0}))
            status = read_status(run_dir)
            if status.get("state") == "finished":
                return history
            if status.get("state") == "failed":
                raise FedllmError(f"run failed: {status.get('error', 'see the SuperLink log')}")
            check_alive()
            if time.monotonic() > deadline:
                raise FedllmError(f"run did not finish within {timeout:.0f}s")
            time.sleep(1.0)

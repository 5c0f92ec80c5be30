"""The table a finished run ends with: results, wall time, where the adapter is, how to use it."""

import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedllm.settings import RunSettings


def human_duration(seconds: float) -> str:
    """`47.7 s`, `1 min 12 s`, `2 h 5 min`."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def predict_command(run_dir: Path) -> str:
    """The one command that classifies reviews with this run's adapter."""
    return f"fedllm predict --run-dir {shlex.quote(str(run_dir))} 'A review to classify.'"


def privacy_spent(history: list[dict[str, Any]]) -> str:
    """The (ε, δ) each site's records spent in the run (DP-SGD), or the aggregate's; or ''."""
    last: dict[str, str] = {}
    for row in history:
        for node in row.get("exchanges", {}).get("train", {}).get("nodes", []):
            if "dp-epsilon" in node:
                last[node["site"]] = (
                    f"{node['site']} ε {node['dp-epsilon']:.2f} δ {node['dp-delta']:.0e}"
                )
        if "privacy" in row:
            total = row["privacy"]
            last["all"] = f"ε {total['epsilon']:.2f} δ {total['delta']:.0e} (site-level)"
    return ", ".join(last[site] for site in sorted(last))


def print_summary(
    run: RunSettings, run_id: int, history: list[dict[str, Any]], seconds: float, console: Console
) -> dict[str, Any]:
    """Print the finished run as a table; return its figures (seconds unrounded)."""
    run_dir = Path(run.run_dir)
    final = history[-1].get("centralized", {}) if history else {}
    summary = {
        "run-id": run_id,
        "rounds": run.num_server_rounds,
        "final-accuracy": final.get("accuracy"),
        "final-f1": final.get("f1"),
        "adapter": str(run_dir / "final"),
        "run-dir": str(run_dir),
        "seconds": seconds,
    }
    if spent := privacy_spent(history):
        summary["privacy"] = spent
    table = Table(title="fedllm run finished", show_header=False)
    for key, value in summary.items():
        if key == "seconds":
            table.add_row("wall time", human_duration(seconds))
        else:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    # Outside the table, so that a long path is not wrapped and the line copies as it is.
    console.print(f"classify reviews with it: {predict_command(run_dir)}", soft_wrap=True)
    return summary

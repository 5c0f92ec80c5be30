"""Keeping a local federation's training job alive across dying processes.

A Flower 1.42 run does not survive its SuperLink: the ServerApp exits with it. The job does:
a SuperNode that exits is started again (it rejoins the next round), and a SuperLink that
exits is started again and the job resubmitted as a new Flower run that resumes from the
last complete checkpoint in the same run directory.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fedllm.errors import FedllmError
from fedllm.federation import LocalFederation
from fedllm.progress import follow
from fedllm.settings import RunSettings
from superlink.checkpoint import completed_rounds
from superlink.history import write_status

MAX_SUPERLINK_RESTARTS = 3


class SuperLinkLost(Exception):
    """The SuperLink process exited while a run was going on."""


def restart_nodes(federation: LocalFederation, console: Console) -> Callable[[], None]:
    """A liveness check that restarts dead SuperNodes and reports a dead SuperLink."""

    def check() -> None:
        for name in federation.dead():
            if name == "superlink":
                raise SuperLinkLost
            console.print(f"{name} exited: restarted")
            federation.restart(name)

    return check


def run_job(
    federation: LocalFederation,
    run: RunSettings,
    app_dir: Path,
    console: Console,
    timeout: float,
) -> tuple[int, list[dict[str, Any]]]:
    """Submit the run and follow it to the end, resuming it after SuperLink restarts."""
    run_dir, submitted = Path(run.run_dir), run
    check = restart_nodes(federation, console)
    for attempt in range(MAX_SUPERLINK_RESTARTS + 1):
        write_status(run_dir, "submitted")
        run_id = federation.submit(app_dir, submitted.to_run_config())
        console.print(f"run {run_id} submitted; logs in {federation.state / 'logs'}")
        try:
            return run_id, follow(run_dir, run.num_server_rounds, console, check, timeout)
        except SuperLinkLost:
            if attempt == MAX_SUPERLINK_RESTARTS:
                break
            federation.restart("superlink")
            done = completed_rounds(run_dir)
            submitted = run.model_copy(update={"resume": bool(done)})
            console.print(
                f"SuperLink exited: restarted, resuming from round {done[-1] if done else 0}"
            )
    raise FedllmError(
        f"SuperLink exited {MAX_SUPERLINK_RESTARTS + 1} times; see {federation.state}"
    )

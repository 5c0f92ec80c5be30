"""`fedllm submit`: run a training job on a remote SuperLink and see it through to the end.

The job outlives Flower runs: when the SuperLink is restarted, its Flower run ends
`finished:failed`; the job waits for the SuperLink to come back and resubmits itself as a
new run that resumes from the last completed round's checkpoint in the same run directory.
That run directory is where the ServerApp writes, so the submitter must see it too
(a shared volume in compose, the SuperLink's volume in Kubernetes).
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fedllm.errors import FedllmError
from fedllm.identity.operator import Operator
from fedllm.orchestration.progress import follow
from fedllm.rundir.checkpoint import completed_rounds, guard_fresh
from fedllm.rundir.history import read_history, read_status, write_status
from fedllm.settings import RunSettings

MAX_RESUBMITS = 5


class RunEnded(Exception):
    """Flower's run is over although the job has not finished (its SuperLink restarted)."""


def watch_run(
    operator: Operator, run_id: int, run_dir: Path, console: Console, every: float = 10.0
) -> Callable[[], None]:
    """A liveness check for `follow`: asks the SuperLink for the run's status now and then.

    Flower calls a run finished once its ServerApp exits; only a run whose ServerApp did
    not record the job as finished first has ended early.
    """
    last = 0.0

    def check() -> None:
        nonlocal last
        if time.monotonic() - last < every:
            return
        last = time.monotonic()
        try:
            status = operator.status(run_id)
        except FedllmError as err:
            console.print(f"SuperLink unreachable ({err}); waiting")
            return
        recorded = read_status(run_dir).get("state") in ("finished", "failed")
        if status.startswith("finished") and not recorded:
            raise RunEnded(status)

    return check


def submit_when_reachable(
    operator: Operator, app_dir: Path, run: RunSettings, console: Console, deadline: float
) -> int:
    """Submit the run, retrying while the SuperLink is not reachable yet."""
    while True:
        try:
            return operator.submit(app_dir, run.to_run_config())
        except FedllmError as err:
            if time.monotonic() > deadline:
                raise
            console.print(f"{err}; retrying in 5 s")
            time.sleep(5.0)


def run_remote_job(
    operator: Operator, run: RunSettings, app_dir: Path, console: Console, timeout: float
) -> tuple[int, list[dict[str, Any]]]:
    """Submit, follow, and resubmit with resume whenever Flower's run ends early."""
    run_dir = Path(run.run_dir)
    deadline = time.monotonic() + timeout
    run_dir.mkdir(parents=True, exist_ok=True)
    if read_status(run_dir).get("state") == "finished" and (run_dir / "final").is_dir():
        console.print(f"run in {run_dir} already finished")
        return int(read_status(run_dir).get("run_id", 0)), read_history(run_dir)
    if completed_rounds(run_dir) and not run.resume:
        guard_fresh(run_dir)  # fails in one line: the run directory holds another run
    submitted = run.model_copy(update={"resume": bool(completed_rounds(run_dir))})
    for _ in range(MAX_RESUBMITS + 1):
        write_status(run_dir, "submitted")
        run_id = submit_when_reachable(operator, app_dir, submitted, console, deadline)
        console.print(f"run {run_id} submitted to {operator.address}")
        try:
            remaining = max(1.0, deadline - time.monotonic())
            check = watch_run(operator, run_id, run_dir, console)
            return run_id, follow(run_dir, run.num_server_rounds, console, check, remaining)
        except RunEnded as ended:
            done = completed_rounds(run_dir)
            submitted = run.model_copy(update={"resume": bool(done)})
            resumed = done[-1] if done else 0
            console.print(f"run {run_id} ended {ended}: resubmitting from round {resumed}")
    raise FedllmError(f"the run ended early {MAX_RESUBMITS + 1} times; see the SuperLink logs")

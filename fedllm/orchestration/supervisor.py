"""Keeping a local federation's training job alive across dying processes.

A Flower 1.42 run does not survive its SuperLink: the ServerApp exits with it. The job does:
a SuperNode that exits is started again (it rejoins the next round), and a SuperLink that
exits is started again and the job resubmitted as a new Flower run that resumes from the
last complete checkpoint in the same run directory.
"""

import time
from pathlib import Path
from typing import Any

from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE
from rich.console import Console

from fedllm.errors import FedllmError
from fedllm.orchestration.federation import LocalFederation
from fedllm.orchestration.progress import follow
from fedllm.rundir.checkpoint import completed_rounds
from fedllm.rundir.history import write_status
from fedllm.settings import RunSettings

MAX_SUPERLINK_RESTARTS = 3
# A killed SuperNode stays online at the SuperLink, which refuses it as long (Flower 1.42).
REFUSED_FOR = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL
MAX_RESTART_DELAY = 30.0  # s between starts of a SuperNode that keeps exiting at once
STEADY = 60.0  # s a SuperNode runs before its exit no longer counts as a failed start


class SuperLinkLost(Exception):
    """The SuperLink process exited while a run was going on."""


class NodeRestarts:
    """A liveness check that restarts dead SuperNodes and reports a dead SuperLink.

    A node is started again 1 s after it exits. One that keeps exiting right after its start
    is tried every second for as long as a SuperLink refuses a node it still counts online;
    after that (a port taken, a certificate gone), 2, 4 ... up to 30 s apart, not in a loop
    that takes the host's CPUs.
    """

    def __init__(self, federation: LocalFederation, console: Console) -> None:
        self.federation, self.console = federation, console
        self.started: dict[str, float] = {}  # name -> when this supervisor last started it
        self.failing_since: dict[str, float] = {}  # name -> first of its exits in a row
        self.delay: dict[str, float] = {}  # name -> its last delay before a start
        self.due: dict[str, float] = {}  # name -> when a dead node is to be started again

    def __call__(self) -> None:
        now = time.monotonic()
        for name in self.federation.dead():
            if name == "superlink":
                raise SuperLinkLost
            if name not in self.due:
                self._schedule(name, now)
            elif now >= self.due[name]:
                del self.due[name]
                self.federation.restart(name)
                self.started[name] = now

    def _schedule(self, name: str, now: float) -> None:
        if not (name in self.started and now - self.started[name] < STEADY):
            self.failing_since[name] = now  # a first exit, or one after a steady run
        if now - self.failing_since[name] <= REFUSED_FOR:
            delay = 1.0
        else:
            delay = min(MAX_RESTART_DELAY, 2 * self.delay[name])
        self.delay[name] = delay
        self.due[name] = now + delay
        status = self.federation.processes[name].returncode
        self.console.print(f"{name} exited with status {status}: restarting it in {delay:.0f} s")


def run_job(
    federation: LocalFederation,
    run: RunSettings,
    app_dir: Path,
    console: Console,
    timeout: float,
) -> tuple[int, list[dict[str, Any]]]:
    """Submit the run and follow it to the end, resuming it after SuperLink restarts."""
    run_dir, submitted = Path(run.run_dir), run
    check = NodeRestarts(federation, console)
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

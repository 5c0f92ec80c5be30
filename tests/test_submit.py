"""`fedllm submit`: when a Flower run has ended early, and what resubmitting resumes from."""

from pathlib import Path

import pytest
from rich.console import Console

from fedllm.errors import FedllmError
from fedllm.identity.operator import Operator
from fedllm.orchestration.submit import RunEnded, watch_run
from fedllm.rundir.history import write_status


class FakeOperator(Operator):
    """The SuperLink's view of one run, or an unreachable SuperLink."""

    def __init__(self, status: str | None) -> None:
        super().__init__("superlink:9443", Path("/certs"), Path("/tmp"))
        self.reply = status

    def status(self, run_id: int) -> str:
        if self.reply is None:
            raise FedllmError("flwr ls failed: connection refused")
        return self.reply


def check(status: str | None, recorded: str, run_dir: Path) -> None:
    write_status(run_dir, recorded)
    watch_run(FakeOperator(status), 7, run_dir, Console(quiet=True), every=0.0)()


def test_a_run_flower_ended_before_the_serverapp_finished_has_ended_early(tmp_path: Path) -> None:
    with pytest.raises(RunEnded, match="finished:failed"):
        check("finished:failed", "running", tmp_path)
    with pytest.raises(RunEnded):
        check("finished:failed", "submitted", tmp_path)  # the ServerApp never started


@pytest.mark.parametrize("recorded", ["finished", "failed"])
def test_a_run_the_serverapp_recorded_as_over_is_left_to_follow(
    tmp_path: Path, recorded: str
) -> None:
    check("finished:completed", recorded, tmp_path)


def test_a_running_run_or_an_unreachable_superlink_keeps_waiting(tmp_path: Path) -> None:
    check("running", "running", tmp_path)
    check(None, "running", tmp_path)

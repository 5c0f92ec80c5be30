"""Restarting SuperNodes that exit: soon after a steady run, ever later when they keep failing."""

import itertools
import time
from typing import Any

import pytest
from rich.console import Console

from fedllm.orchestration.supervisor import NodeRestarts, SuperLinkLost
from tests.clock import FakeClock


class Process:
    def __init__(self, returncode: int | None = None) -> None:
        self.returncode = returncode


class Federation:
    """The part of LocalFederation the supervisor uses; a restarted node exits with `status`."""

    def __init__(self, status: int | None = None) -> None:
        self.processes: dict[str, Any] = {"superlink": Process(), "node-1": Process()}
        self.status = status
        self.starts: list[float] = []

    def dead(self) -> list[str]:
        return [name for name, proc in self.processes.items() if proc.returncode is not None]

    def restart(self, name: str) -> None:
        self.processes[name] = Process(self.status)
        self.starts.append(time.monotonic())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock.monotonic)
    return clock


def run_for(check: NodeRestarts, clock: FakeClock, seconds: int) -> None:
    """Call the check once a second, as `follow` does."""
    for _ in range(seconds):
        check()
        clock.sleep(1.0)


def announced_delays(console: Console) -> list[int]:
    lines = console.export_text(clear=False).splitlines()
    return [int(line.split(" in ")[1].removesuffix(" s")) for line in lines]


def test_a_node_failing_at_start_is_restarted_ever_later(clock: FakeClock) -> None:
    federation, console = Federation(status=305), Console(record=True, width=200)
    check = NodeRestarts(federation, console)  # type: ignore[arg-type]
    federation.processes["node-1"] = Process(305)
    run_for(check, clock, 200)
    delays = announced_delays(console)
    # Every second while a SuperLink may still count it online (60 s), then backing off.
    every_second = [delay for delay in delays if delay == 1]
    assert 25 <= len(every_second) <= 31
    backing_off = delays[len(every_second) :]
    assert backing_off[:5] == [2, 4, 8, 16, 30] and set(backing_off[5:]) == {30}
    # Each start comes one poll after the exit it follows was seen, then the delay.
    gaps = [later - earlier for earlier, later in itertools.pairwise(federation.starts)]
    assert gaps == [1.0 + delay for delay in delays[1 : len(gaps) + 1]]
    assert "node-1 exited with status 305: restarting it in 1 s" in console.export_text(clear=False)


def test_a_node_that_ran_steadily_is_restarted_after_a_second(clock: FakeClock) -> None:
    federation, console = Federation(status=1), Console(record=True, width=200)
    check = NodeRestarts(federation, console)  # type: ignore[arg-type]
    federation.processes["node-1"] = Process(1)
    run_for(check, clock, 90)  # quick failures: every second, then backing off
    assert announced_delays(console)[-1] > 1
    federation.status = None  # the next start lasts
    run_for(check, clock, 40)
    assert federation.processes["node-1"].returncode is None
    run_for(check, clock, 61)
    federation.processes["node-1"] = Process(-9)
    run_for(check, clock, 3)
    assert announced_delays(console)[-1] == 1
    assert "status -9" in console.export_text(clear=False).splitlines()[-1]


def test_a_dead_superlink_is_reported_not_restarted(clock: FakeClock) -> None:
    federation = Federation()
    federation.processes["superlink"] = Process(1)
    with pytest.raises(SuperLinkLost):
        NodeRestarts(federation, Console())()  # type: ignore[arg-type]
    assert federation.starts == []

"""Faults through real processes: a SuperNode or the SuperLink killed mid-run, a node stalled."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedllm.rundir.checkpoint import completed_rounds
from fedllm.rundir.history import read_status
from tests.federations import FAULTY_APP, announced, federation, run_settings, wait_for

pytestmark = pytest.mark.integration
# Round timeout of the stalled-node test: what the stalled round costs; it must also leave the
# other nodes time to reply on a loaded machine.
STALL_TIMEOUT = 40.0


def start_up(run_dir: Path, demo_assets: tuple[Path, Path], nodes: int) -> subprocess.Popen[str]:
    """`fedllm up` of `nodes` nodes, 4 rounds. Each round waits for every node to be connected
    (`min-nodes`), so a killed node takes part again in the rounds after the one it failed,
    however long the SuperLink takes to let it back in (until its heartbeat lapses)."""
    model_dir, reviews = demo_assets
    command = [
        sys.executable, "-m", "fedllm", "up", "--nodes", str(nodes), "--rounds", "4",
        "--model", str(model_dir), "--dataset", str(reviews), "--run-dir", str(run_dir),
        "--set", "max-length=32", "--set", "round-timeout=60", "--set", f"min-nodes={nodes}",
        "--timeout", "420",
    ]  # fmt: skip
    return subprocess.Popen(  # its own process group, taking SIGINT as from a terminal
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def rounds_done(run_dir: Path) -> list[int]:
    try:
        return [row["round"] for row in json.loads((run_dir / "history.json").read_text())]
    except (OSError, ValueError):
        return []


def wait_for_round(run_dir: Path, server_round: int, up: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if server_round in rounds_done(run_dir):
            return
        assert up.poll() is None, up.communicate()[0]
        time.sleep(0.5)
    raise AssertionError(f"round {server_round} never completed")


def pid_of(*needles: str) -> int:
    """The one live process whose command line holds every needle."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            return int(proc.name)
    raise AssertionError(f"no process with {needles}")


def finish(up: subprocess.Popen[str]) -> str:
    output = up.communicate(timeout=480)[0]
    assert up.returncode == 0, output
    return output


def test_a_killed_supernode_fails_its_round_and_rejoins(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    up = start_up(run_dir, demo_assets, nodes=3)
    wait_for_round(run_dir, 1, up)
    os.kill(pid_of("fedllm", "supernode", str(run_dir), "--name node-2"), signal.SIGKILL)
    output = finish(up)
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["round"] for row in history] == [0, 1, 2, 3, 4]
    assert any(row.get("nodes-failed", 0) >= 1 for row in history[2:])
    assert history[-1]["nodes-replied"] == 3, output
    assert "node-2 exited" in output and "restarting it in" in output


def test_a_killed_superlink_is_restarted_and_the_run_resumed(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    up = start_up(run_dir, demo_assets, nodes=2)
    wait_for_round(run_dir, 1, up)
    os.kill(pid_of("flower-superlink", str(run_dir)), signal.SIGKILL)
    output = finish(up)
    assert "resuming from round" in output
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["round"] for row in history] == [0, 1, 2, 3, 4]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "final" / "adapter_config.json").is_file()
    # Nor does the killed SuperLink's ServerApp live on (it can hang instead of exiting).
    assert leftovers(run_dir) == []


@pytest.mark.parametrize(("name", "exit_code"), [("SIGTERM", 0), ("SIGINT", 130)])
def test_a_signal_stops_everything_and_says_how_to_resume(
    demo_assets: tuple[Path, Path], tmp_path: Path, name: str, exit_code: int
) -> None:
    """SIGTERM: a requested stop (status 0); SIGINT, as Ctrl-C sends it to the terminal's
    process group: status 130. Either way the run is recorded as stopped, with its resume."""
    run_dir = tmp_path / "run"
    up = start_up(run_dir, demo_assets, nodes=2)
    wait_for_round(run_dir, 1, up)
    # history.json records a round just before its checkpoint is written
    wait_for(lambda: 1 in completed_rounds(run_dir), 60, "round 1's checkpoint")
    checkpoint = (run_dir / "checkpoints/round-1/adapter.safetensors").read_bytes()
    os.killpg(up.pid, getattr(signal, name))
    output = up.communicate(timeout=60)[0]
    assert up.returncode == exit_code, output
    stopped = [line for line in output.splitlines() if line.startswith("fedllm: stopped by")]
    assert len(stopped) == 1 and f"stopped by {name} after round" in stopped[0], output
    assert stopped[0].endswith(f"--run-dir {run_dir} --set max-length=32 --set round-timeout=60"
                               " --set min-nodes=2 --timeout 420 --resume")  # fmt: skip
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "stopped" and status["signal"] == name and status["rounds"] >= 1
    assert (run_dir / "checkpoints/round-1/adapter.safetensors").read_bytes() == checkpoint
    assert leftovers(run_dir) == []


def leftovers(run_dir: Path) -> list[str]:
    """Command lines of live processes that mention the run directory."""
    found = [_cmdline(pid) for pid in Path("/proc").iterdir() if pid.name.isdigit()]
    return [cmdline for cmdline in found if str(run_dir) in cmdline]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_stalled_supernode_fails_its_round_and_rejoins_when_resumed(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGSTOP a SuperNode and everything below it mid-round 1: the round closes after
    round-timeout with the other two; after SIGCONT the node takes part in round 2."""
    run_dir = tmp_path / "run"
    fed = federation(run_dir, [{}, {}, {"faults": "slow"}])  # node-3 10 s late in round 1
    run = run_settings(
        demo_assets, run_dir, num_server_rounds=2, min_nodes=3, fraction_evaluate=0.0,
        round_timeout=STALL_TIMEOUT,
    )  # fmt: skip
    with fed:
        fed.submit(FAULTY_APP, run.to_run_config())
        wait_for(lambda: announced(fed, "node-3", 1, "slow"), 240, "node-3 in round 1")
        node = psutil.Process(fed.processes["node-3"].pid)
        stalled = [node, *node.children(recursive=True)]
        for proc in stalled:
            proc.suspend()
        try:
            wait_for(lambda: 1 in rounds_done(run_dir), STALL_TIMEOUT + 120, "round 1")
        finally:
            for proc in stalled:
                with contextlib.suppress(psutil.Error):
                    proc.resume()
        wait_for(lambda: read_status(run_dir).get("state") != "running", 240, "the run's end")
    history = json.loads((run_dir / "history.json").read_text())
    assert read_status(run_dir)["state"] == "finished"
    assert [row["round"] for row in history] == [0, 1, 2]
    assert (history[1]["nodes-replied"], history[1]["nodes-failed"]) == (2, 1)
    assert history[1]["elapsed-seconds"] >= STALL_TIMEOUT
    assert (history[2]["nodes-replied"], history[2]["nodes-failed"]) == (3, 0)

"""Faults through real processes: a SuperNode or the SuperLink killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def start_up(run_dir: Path, demo_assets: tuple[Path, Path], nodes: int) -> subprocess.Popen[str]:
    model_dir, reviews = demo_assets
    command = [
        sys.executable, "-m", "fedllm", "up", "--nodes", str(nodes), "--rounds", "4",
        "--model", str(model_dir), "--dataset", str(reviews), "--run-dir", str(run_dir),
        "--set", "max-length=32", "--set", "round-timeout=60", "--set", "min-nodes=2",
        "--timeout", "420",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


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
    assert "node-2 exited" in output and "restarted" in output


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


def test_sigterm_stops_everything_and_exits_zero(
    demo_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    up = start_up(run_dir, demo_assets, nodes=2)
    wait_for_round(run_dir, 1, up)
    checkpoint = (run_dir / "checkpoints/round-1/adapter.safetensors").read_bytes()
    up.send_signal(signal.SIGTERM)
    output = up.communicate(timeout=60)[0]
    assert up.returncode == 0, output
    assert "stopped by SIGTERM" in output
    assert (run_dir / "checkpoints/round-1/adapter.safetensors").read_bytes() == checkpoint
    leftovers = [pid for pid in Path("/proc").iterdir() if pid.name.isdigit()
                 and str(run_dir) in _cmdline(pid)]  # fmt: skip
    assert leftovers == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""

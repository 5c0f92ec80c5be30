"""Stray processes of a federation: found by the state directory their arguments name."""

import subprocess
import sys
from pathlib import Path

from fedllm.orchestration.processes import kill_strays


def sleeper(marker: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(marker)])


def test_strays_are_killed_and_owned_processes_spared(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stray, kept, other = sleeper(state / "pki"), sleeper(state / "home"), sleeper(tmp_path / "x")
    try:
        assert kill_strays(str(state), [kept]) == [stray.pid]
        assert stray.wait(timeout=10) != 0
        assert kept.poll() is None and other.poll() is None
    finally:
        for process in (stray, kept, other):
            process.kill()
            process.wait()

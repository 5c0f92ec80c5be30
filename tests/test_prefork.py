"""ClientApps forked from a warm parent, and Flower's own `flwr-clientapp` when there is none."""

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedllm.flower_internals.prefork import start, write_launcher

ROOT = Path(__file__).resolve().parents[1]
TARGET = """
import json, os, sys
def main():
    with open(sys.argv[1], "w") as out:
        app = [name for name in sys.modules if name.split(".")[0] in ("fedllm", "supernode")]
        json.dump({"argv": sys.argv, "cwd": os.getcwd(), "mark": os.environ.get("MARK"),
                   "pid": os.getpid(), "ppid": os.getppid(), "app_modules": app}, out)
    sys.exit(3)
"""
REAL = """#!/bin/sh
echo "real $*" > "$1"
"""


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """(launcher, socket path): a fake real `flwr-clientapp` and a target entry point."""
    (tmp_path / "target.py").write_text(TARGET)
    real = tmp_path / "real-flwr-clientapp"
    real.write_text(REAL)
    real.chmod(0o755)
    socket_path = tmp_path / "s.sock"
    return write_launcher(tmp_path / "bin", socket_path, str(real)), socket_path


def launch(launcher: Path, out: Path, cwd: Path) -> None:
    env = {**os.environ, "MARK": "from-superexec"}
    subprocess.run([str(launcher), str(out)], env=env, cwd=cwd, check=True, timeout=20)
    wait_for(out)
    time.sleep(0.1)  # the file is complete once written and closed


def test_a_request_is_forked_from_the_server(setup: tuple[Path, Path], tmp_path: Path) -> None:
    launcher, socket_path = setup
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-P", str(ROOT / "fedllm/flower_internals/prefork.py"), "--socket",
               str(socket_path), "--preload", "json", "--entry", "target:main"]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        wait_for(socket_path)
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        out = tmp_path / "forked.json"
        launch(launcher, out, cwd=tmp_path)
        child = json.loads(out.read_text())
        assert child["argv"][1:] == [str(out)]
        assert (child["cwd"], child["mark"], child["ppid"]) == (
            str(tmp_path),
            "from-superexec",
            server.pid,
        )
        second = tmp_path / "second.json"
        launch(launcher, second, cwd=tmp_path)
        assert json.loads(second.read_text())["pid"] != child["pid"]  # a new process each time
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_without_a_server_flowers_own_runs(setup: tuple[Path, Path], tmp_path: Path) -> None:
    launcher, _ = setup
    out = tmp_path / "real.txt"
    launch(launcher, out, cwd=tmp_path)
    assert out.read_text().strip() == f"real {out}"


def test_start_puts_the_launcher_first_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.environ["PATH"])  # restored afterwards
    server = start()
    assert server is not None
    try:
        first = Path(os.environ["PATH"].split(os.pathsep)[0])
        assert (first / "flwr-clientapp").is_file()
        assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("why", ["disabled", "no temporary directory"])
def test_without_prefork_path_is_left_alone(
    why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if why == "disabled":
        monkeypatch.setenv("FEDLLM_PREFORK", "0")
    else:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    before = os.environ["PATH"]
    assert start() is None
    assert os.environ["PATH"] == before

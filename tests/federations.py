"""Test helpers: a LocalFederation on loopback mTLS driven from the test, and process checks."""

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from fedllm.identity import pki
from fedllm.orchestration.federation import LocalFederation
from fedllm.orchestration.processes import flower_env
from fedllm.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
# The test-only Flower App: fedllm's ServerApp and ClientApp, with faults injected on the
# nodes whose node config says `faults="..."` (tests/apps/faulty/faulty_clientapp.py).
FAULTY_APP = ROOT / "tests" / "apps" / "faulty"
# What it logs when it injects a fault: node id, round, fault.
FAULT = re.compile(r"faulty-clientapp: node (\d+) round (\d+): ([\w-]+)")


def federation(run_dir: Path, node_configs: list[dict[str, Any]]) -> LocalFederation:
    """A not yet started federation with a fresh PKI in `run_dir/state`, one node per config."""
    state = run_dir / "state"
    names = [f"node-{index + 1}" for index in range(len(node_configs))]
    pki.generate(state / "pki", names)
    nodes = [
        {"partition-id": index, "num-partitions": len(node_configs), "threads": 1, **config}
        for index, config in enumerate(node_configs)
    ]
    return LocalFederation(state, state / "pki", nodes)


def run_settings(demo_assets: tuple[Path, Path], run_dir: Path, **values: Any) -> RunSettings:
    """Small, quick run settings on the demo assets (overridable)."""
    model_dir, reviews = demo_assets
    defaults: dict[str, Any] = {
        "model": str(model_dir),
        "dataset": str(reviews),
        "run_dir": str(run_dir),
        "max_length": 32,
        "round_timeout": 120.0,  # generous: only a node that is gone may fail a round
    }
    return RunSettings(**(defaults | values))


def flwr(fed: LocalFederation, *args: str) -> str:
    """Output of `fedllm flwr ARGS` as the operator of `fed` (after a submit wrote its config)."""
    command = [sys.executable, "-m", "fedllm", "flwr", "--certs", str(fed.certs), *args]
    env = flower_env(fed.state / "home" / "operator")
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def flwr_log(fed: LocalFederation, run_id: int) -> str:
    """What `flwr log RUN_ID --show` prints (the ServerApp's log) while the SuperLink runs."""
    return flwr(fed, "log", str(run_id), "local", "--show")


def flwr_status(fed: LocalFederation, run_id: int) -> str:
    """Flower's status of a run (`running`, `finished:failed`, ...) from `flwr ls`."""
    reply = json.loads(flwr(fed, "ls", "local", "--run-id", str(run_id), "--format", "json"))
    return str(reply["runs"][0]["status"])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 0.2 s until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below `pid`."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def announced(fed: LocalFederation, node: str, server_round: int, fault: str) -> bool:
    """Whether the faulty test app on `node` has announced `fault` for `server_round`."""
    log = (fed.state / "logs" / f"{node}.log").read_text(errors="replace")
    return (str(server_round), fault) in {(rnd, what) for _, rnd, what in FAULT.findall(log)}


def programs(processes: list[psutil.Process]) -> list[str]:
    """What each live process runs: `flower-superexec`, the prefork server, `nginx`, ..."""
    found = []
    for proc in processes:
        try:
            words = [Path(word).name for word in proc.cmdline()]
        except psutil.Error:
            continue
        if words and words[0].startswith("python"):
            words = words[1:]
        if words and words[0] == "-m":  # python -m <module>
            words = words[1:]
        found.append(words[0].removesuffix(":") if words else "?")
    return found


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` s for `processes` to end; return those still alive (not zombies)."""
    deadline = time.monotonic() + timeout
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [proc for proc in alive if _running(proc)]
    return [proc for proc in alive if _running(proc)]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_role(process: "subprocess.Popen[bytes]", timeout: float) -> tuple[int, float]:
    """SIGTERM one role process (not its group); its exit status and seconds it took."""
    started = time.monotonic()
    process.terminate()
    returncode = process.wait(timeout=timeout)
    return returncode, time.monotonic() - started

"""Starting and stopping Flower's own processes with the environment fedllm requires."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

# Nothing leaves a site but the adapter: no telemetry, no update checks.
QUIET_FLOWER = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def flower_bin(name: str) -> str:
    """A Flower executable from the same environment as this interpreter."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def flower_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a Flower process with its own FLWR_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **QUIET_FLOWER, "FLWR_HOME": str(home), **extra}


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `command` in its own process group, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        return subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(
    processes: list[subprocess.Popen[bytes]],
    grace: float = 10.0,
    seen: Iterable[psutil.Process] = (),
) -> None:
    """SIGTERM each process group, SIGKILL what remains, descendants in other groups included.

    Flower's apps may outlive a SIGTERM'd parent (a ServerApp busy evaluating): every
    descendant seen before signalling is killed at the end, and so is every process in
    `seen` (descendants recorded earlier, orphaned since if their parent died).
    """
    descendants = [*seen, *descendants_of(processes)]
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal_group(process, signal.SIGKILL)
        process.wait()
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def stop_descendants(grace: float = 3.0) -> None:
    """SIGTERM every process below this one; SIGKILL those still running after `grace` s.

    Flower's SuperExec and ClientApps only notice their parent's death by polling and can
    outlive it by tens of seconds (a ClientApp retrying a runtime API that is gone).
    """
    children = _descendants(os.getpid())
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def descendants_of(processes: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    """Every live process below `processes`."""
    return [child for process in processes for child in _descendants(process.pid)]


def kill_strays(marker: str, keep: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGKILL processes whose command line holds `marker` and that nothing here owns.

    A Flower ServerApp orphaned by a killed SuperLink can hang instead of exiting; it is
    no one's descendant any more, but its arguments still name the federation's state.
    Spared: this process, its ancestors, `keep` and their descendants. Returns the pids.
    """
    me = psutil.Process()
    owned = {me.pid, *(parent.pid for parent in me.parents())}
    owned |= {process.pid for process in keep} | {child.pid for child in descendants_of(keep)}
    killed = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid not in owned and marker in " ".join(proc.info["cmdline"] or []):
                proc.kill()
                killed.append(proc.pid)
    return killed


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)

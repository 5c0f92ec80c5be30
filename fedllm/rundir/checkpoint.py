"""The run directory: per-round checkpoints, history, status and the final adapter."""

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord

from fedllm.errors import FedllmError
from fedllm.learning.adapter import load_safetensors, save_safetensors

ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "state.json"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically so a reader or a crash never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    """Read JSON, or `default` when the file does not exist."""
    return json.loads(path.read_text()) if path.exists() else default


def checkpoint_dir(run_dir: Path, server_round: int) -> Path:
    """Where round `server_round`'s checkpoint lives."""
    return run_dir / "checkpoints" / f"round-{server_round}"


def save_checkpoint(
    run_dir: Path, server_round: int, arrays: ArrayRecord, state: dict[str, Any]
) -> Path:
    """Write adapter + JSON for a round; the directory appears only once complete."""
    final = checkpoint_dir(run_dir, server_round)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_safetensors(arrays, tmp / ADAPTER_FILE)
        write_json(tmp / STATE_FILE, {"round": server_round, "saved-at": time.time(), **state})
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: earlier checkpoints stay
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def prune(run_dir: Path, keep_last: int) -> list[int]:
    """Delete checkpoints but the newest `keep_last` and the best by centralized accuracy."""
    rounds = completed_rounds(run_dir)
    if keep_last <= 0 or len(rounds) <= keep_last:
        return []

    def accuracy(server_round: int) -> float:
        state = read_json(checkpoint_dir(run_dir, server_round) / STATE_FILE, {})
        return float(state.get("metrics", {}).get("centralized", {}).get("accuracy", -1.0))

    keep = set(rounds[-keep_last:]) | {max(rounds, key=accuracy)}
    removed = [server_round for server_round in rounds if server_round not in keep]
    for server_round in removed:
        shutil.rmtree(checkpoint_dir(run_dir, server_round))
    return removed


def completed_rounds(run_dir: Path) -> list[int]:
    """Rounds with a complete checkpoint, ascending."""
    found = []
    for path in (run_dir / "checkpoints").glob("round-*"):
        suffix = path.name.removeprefix("round-")
        if suffix.isdigit() and (path / STATE_FILE).is_file() and (path / ADAPTER_FILE).is_file():
            found.append(int(suffix))
    return sorted(found)


def load_last_checkpoint(run_dir: Path) -> tuple[int, ArrayRecord]:
    """The newest complete checkpoint, to resume from."""
    rounds = completed_rounds(run_dir)
    if not rounds:
        raise FedllmError(f"nothing to resume: {run_dir} has no complete checkpoint")
    adapter = checkpoint_dir(run_dir, rounds[-1]) / ADAPTER_FILE
    try:
        return rounds[-1], load_safetensors(adapter)
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise FedllmError(
            f"checkpoint {adapter} cannot be read ({err}); nothing was changed"
        ) from None


def guard_fresh(run_dir: Path) -> None:
    """Refuse to start a new run over an earlier run's checkpoints."""
    if completed_rounds(run_dir):
        raise FedllmError(
            f"run directory {run_dir} already holds checkpoints: resume it (resume=true) "
            "or choose another run directory"
        )

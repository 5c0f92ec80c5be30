"""The operator's side of a SuperLink's Control API: submit a run and read its status.

Both go through Flower's own `flwr` CLI (`fedllm flwr`, which presents the operator
certificate to the mTLS gateway), with a Flower home that names this SuperLink.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w

from fedllm.errors import FedllmError
from fedllm.orchestration.processes import flower_env

FEDLLM = [sys.executable, "-m", "fedllm"]


class Operator:
    """Talks to the SuperLink gateway at `address` with the operator certificate in `certs`."""

    def __init__(self, address: str, certs: Path, home: Path) -> None:
        self.address = address
        self.certs = certs
        self.home = home

    def submit(self, app_dir: Path, run_config: dict[str, Any]) -> int:
        """`flwr run` the app with `run_config`; return the run id."""
        config_file = self.home / "run-config.toml"
        self._write_home()
        config_file.write_text(tomli_w.dumps(run_config))
        reply = self._flwr("run", str(app_dir), "local", "--run-config", str(config_file))
        try:
            return int(reply["run-id"])
        except (KeyError, TypeError, ValueError):
            raise FedllmError(f"flwr run gave no run id: {reply}") from None

    def status(self, run_id: int) -> str:
        """Flower's status of a run: `running`, `finished:completed`, `finished:failed` ..."""
        self._write_home()
        reply = self._flwr("ls", "local", "--run-id", str(run_id))
        try:
            return str(reply["runs"][0]["status"])
        except (KeyError, IndexError, TypeError):
            raise FedllmError(f"flwr ls gave no status for run {run_id}: {reply}") from None

    def _write_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        connection = {"address": self.address, "root-certificates": str(self.certs / "ca.crt")}
        flower_config = {"superlink": {"default": "local", "local": connection}}
        (self.home / "config.toml").write_text(tomli_w.dumps(flower_config))

    def _flwr(self, *args: str) -> dict[str, Any]:
        command = [*FEDLLM, "flwr", "--certs", str(self.certs), *args, "--format", "json"]
        result = subprocess.run(
            command, env=flower_env(self.home), capture_output=True, text=True, check=False
        )
        try:
            reply = json.loads(result.stdout)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and reply.get("success", False):
            return reply
        # Flower's JSON error reply carries the message; otherwise the last output line.
        message = reply.get("error-message", "") if isinstance(reply, dict) else ""
        lines = [line for line in (message or result.stdout + result.stderr).splitlines() if line]
        last = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise FedllmError(f"flwr {args[0]} failed: {last}")

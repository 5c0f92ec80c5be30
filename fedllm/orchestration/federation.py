"""A whole federation on one machine: real SuperLink and SuperNodes over mutual TLS on loopback.

Every process is started through the same role entrypoints the containers run:
`fedllm superlink`, `fedllm supernode` and `fedllm flwr` (the operator's `flwr run`).
"""

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from fedllm.errors import FedllmError
from fedllm.identity.operator import Operator
from fedllm.orchestration.ports import free_port
from fedllm.orchestration.processes import flower_env, kill_strays, spawn, stop

FEDLLM = [sys.executable, "-m", "fedllm"]


class LocalFederation:
    """Starts SuperLink + SuperNodes on enter, stops every process it started on exit."""

    def __init__(
        self,
        state: Path,
        certs: Path,
        node_configs: list[dict[str, Any]],
        metrics_port: int = 0,
        node_launcher: Sequence[str] = (),
    ) -> None:
        self.state = state
        self.certs = certs
        self.node_configs = node_configs
        # Prefixed to each SuperNode's command (e.g. one that joins a memory cgroup, then execs).
        self.node_launcher = list(node_launcher)
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        names = ["superlink", *(f"node-{index + 1}" for index in range(len(node_configs)))]
        # Exporter ports: SuperLink on metrics_port, node k on metrics_port + k; 0: free ports.
        self.metrics_ports = {
            name: metrics_port + index if metrics_port else free_port()
            for index, name in enumerate(names)
        }

    @property
    def address(self) -> str:
        """Where SuperNodes and the run submitter dial the SuperLink."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalFederation":
        try:
            self._start_superlink()
            for index, config in enumerate(self.node_configs):
                self._start_supernode(index, config)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process this federation started, and strays left by dead ones.

        SuperNodes first, so that they sign off at a SuperLink still there: one it still
        counts online is refused when it joins again until its heartbeat lapses (60 s).
        """
        stop([proc for name, proc in self.processes.items() if name != "superlink"])
        stop([proc for name, proc in self.processes.items() if name == "superlink"])
        kill_strays(str(self.state), [])

    def metrics_targets(self) -> dict[str, list[str]]:
        """Exporter addresses per Prometheus job: `superlink` and `supernode`."""
        addresses = {name: f"127.0.0.1:{port}" for name, port in self.metrics_ports.items()}
        nodes = [address for name, address in addresses.items() if name != "superlink"]
        return {"superlink": [addresses["superlink"]], "supernode": nodes}

    def metrics_options(self, name: str) -> list[str]:
        """Exporter port and metrics directory options of a role command."""
        directory = self.state / "metrics" / name
        return ["--metrics-port", str(self.metrics_ports[name]), "--metrics-dir", str(directory)]

    def restart(self, name: str) -> None:
        """Start a role process that exited again, the way it was first started."""
        self.processes.pop(name).wait()
        if name == "superlink":
            # The dead SuperLink's ServerApp may hang on as an orphan; it belongs to no run now.
            kill_strays(str(self.state), list(self.processes.values()))
            self._start_superlink()
        else:
            index = int(name.removeprefix("node-")) - 1
            self._start_supernode(index, self.node_configs[index])

    def dead(self) -> list[str]:
        """Names of started processes that have exited."""
        return [name for name, proc in self.processes.items() if proc.poll() is not None]

    def _start_superlink(self) -> None:
        command = [
            *FEDLLM, "superlink",
            "--certs", str(self.certs),
            "--state", str(self.state),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--register-certs",
            *self.metrics_options("superlink"),
        ]  # fmt: skip
        env = flower_env(self.state / "home" / "superlink")
        self.processes["superlink"] = spawn(command, env, self.state / "logs" / "superlink.log")
        self._wait_healthy(timeout=60)

    def _wait_healthy(self, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        context.load_cert_chain(self.certs / "operator.crt", self.certs / "operator.key")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "superlink" in self.dead():  # a dead node is the supervisor's business
                raise FedllmError(f"SuperLink exited early; see {self.state / 'logs'}")
            try:
                if httpx.get(f"https://{self.address}/health", verify=context).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise FedllmError(f"SuperLink not healthy after {timeout:.0f}s; see {self.state / 'logs'}")

    def _start_supernode(self, index: int, config: dict[str, Any]) -> None:
        name = f"node-{index + 1}"
        node_config = " ".join(f"{key}={json.dumps(value)}" for key, value in config.items())
        command = [
            *self.node_launcher,
            *FEDLLM, "supernode",
            "--certs", str(self.certs),
            "--name", name,
            "--superlink", self.address,
            "--node-config", node_config,
            "--runtime-port", str(free_port()),
            *self.metrics_options(name),
        ]  # fmt: skip
        env = flower_env(self.state / "home" / name)
        self.processes[name] = spawn(command, env, self.state / "logs" / f"{name}.log")

    def operator(self) -> Operator:
        """The operator's Control API client for this federation."""
        return Operator(self.address, self.certs, self.state / "home" / "operator")

    def submit(self, app_dir: Path, run_config: dict[str, Any]) -> int:
        """`flwr run` the app with `run_config`; return the run id."""
        return self.operator().submit(app_dir, run_config)

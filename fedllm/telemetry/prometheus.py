"""Debian's `prometheus` beside a local federation, scraping its exporters."""

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import httpx
from rich.console import Console

from fedllm.errors import FedllmError
from fedllm.orchestration.processes import spawn, stop

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"


def prometheus_binary() -> str:
    """The `prometheus` executable, or a one-line error saying how to get it."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FedllmError("prometheus not found: install it (apt-get install prometheus)")
    return binary


def scrape_config(targets: dict[str, list[str]], interval: str) -> dict[str, object]:
    """prometheus.yml content (JSON is YAML): one job per role, the alert rules when present."""
    jobs = [{"job_name": job, "static_configs": [{"targets": addresses}]}
            for job, addresses in targets.items()]  # fmt: skip
    config: dict[str, object] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    if RULES.is_file():  # a source checkout; an installed wheel has no docker/
        config["rule_files"] = [str(RULES)]
    return config


class LocalPrometheus:
    """Prometheus on 127.0.0.1:`port` with its data in `directory`, for as long as the block."""

    def __init__(
        self, directory: Path, targets: dict[str, list[str]], port: int, interval: str = "5s"
    ) -> None:
        self.directory = directory
        self.targets = targets
        self.interval = interval
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "LocalPrometheus":
        binary = prometheus_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(json.dumps(scrape_config(self.targets, self.interval), indent=2))
        command = [binary, f"--config.file={config}",
                   f"--storage.tsdb.path={self.directory / 'data'}",
                   f"--web.listen-address={self.url.removeprefix('http://')}"]  # fmt: skip
        self.process = spawn(command, dict(os.environ), self.log)
        try:
            self.wait(lambda: httpx.get(f"{self.url}/-/ready").is_success)
        except BaseException:
            stop([self.process])
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """After a clean run, wait for one more scrape of every target, so the end is kept."""
        if self.process is None:
            return
        try:
            if exc is None and self.targets:
                asked = time.time()
                self.wait(lambda: self.query("min(timestamp(up))") > asked)
        finally:
            stop([self.process])

    def query(self, promql: str) -> float:
        """The value of an instant query with a single result (NaN when there is none)."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}).json()
        result = reply["data"]["result"]
        return float(result[0]["value"][1]) if result else float("nan")

    def wait(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        """Poll `ready` until true; a one-line error if Prometheus exits or time runs out."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                lines = self.log.read_text(errors="replace").strip().splitlines() or ["no output"]
                raise FedllmError(f"prometheus exited: {lines[-1]}; see {self.log}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise FedllmError(f"prometheus not ready within {timeout:.0f}s; see {self.log}")


@contextlib.contextmanager
def local_prometheus(
    directory: Path, targets: dict[str, list[str]], port: int | None, console: Console
) -> Iterator[None]:
    """Prometheus scraping `targets` for the duration of the block; nothing when `port` is None."""
    if port is None:
        yield
        return
    with LocalPrometheus(directory, targets, port) as prometheus:
        console.print(f"Prometheus on {prometheus.url}, data in {directory / 'data'}")
        yield

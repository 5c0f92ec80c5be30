"""The exporter of a role process: its apps' metrics (multiprocess files) plus host figures.

`fedllm superlink` and `fedllm supernode` start it before Flower, so that
PROMETHEUS_MULTIPROC_DIR reaches every ServerApp/ClientApp child Flower starts.
"""

import os
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from fedllm.errors import FedllmError
from fedllm.telemetry.host import HostCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ConstantLabels(Collector):
    """Adds the same labels (role, node) to every sample of the wrapped collectors."""

    def __init__(self, labels: dict[str, str], *collectors: Collector) -> None:
        self.labels = labels
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        """The wrapped collectors' metrics, relabelled."""
        for collector in self.collectors:
            for metric in collector.collect():
                metric.samples = [
                    sample._replace(labels={**sample.labels, **self.labels})
                    for sample in metric.samples
                ]
                yield metric


def build_registry(
    role: str,
    node: str,
    metrics_dir: Path,
    certificates: list[Path],
    collectors: Sequence[Collector] = (),
) -> CollectorRegistry:
    """App metrics from `metrics_dir`, host figures and the role's own `collectors`, all
    labelled with role and node."""
    registry = CollectorRegistry(auto_describe=False)
    apps = MultiProcessCollector(None, path=str(metrics_dir))
    host = HostCollector(certificates)
    registry.register(ConstantLabels({"role": role, "node": node}, apps, host, *collectors))
    return registry


def port_taken(host: str, port: int, err: OSError) -> FedllmError:
    """The one-line error for an exporter port that cannot be bound."""
    return FedllmError(f"cannot serve metrics on {host}:{port}: {err.strerror}")


def check_free(host: str, ports: Iterable[int]) -> None:
    """Fail in one line, before anything starts, when an exporter port is taken."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the exporter does
            try:
                probe.bind((host, port))
            except OSError as err:
                raise port_taken(host, port, err) from None


def serve(host: str, port: int, registry: CollectorRegistry) -> None:
    """Serve `registry` on http://host:port/metrics from a daemon thread."""
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        raise port_taken(host, port, err) from None


def start_exporter(
    role: str,
    node: str,
    host: str,
    port: int,
    metrics_dir: Path | None,
    certificates: list[Path],
    collectors: Sequence[Collector] = (),
) -> None:
    """Empty `metrics_dir` (default: a new temporary one), hand it to this process's children,
    and serve /metrics on host:port; port 0 means no exporter."""
    if not port:
        return
    metrics_dir = metrics_dir or Path(tempfile.mkdtemp(prefix="fedllm-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # values of an earlier life of this role
        stale.unlink()
    serve(host, port, build_registry(role, node, metrics_dir, certificates, collectors))
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    print(f"fedllm: metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)

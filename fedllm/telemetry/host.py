"""Host figures read on every scrape: memory, PSI, the memory cgroup, certificate expiry."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedllm.errors import FedllmError
from fedllm.telemetry.certificate import seconds_until_expiry
from fedllm.telemetry.cgroup import memory_cgroup, pressure_file
from fedllm.telemetry.memory import read_pressure, system_memory

SYSTEM = {
    "MemAvailable": (
        "fedllm_memory_available_bytes",
        "Memory available for new work (MemAvailable).",
    ),
    "MemTotal": ("fedllm_memory_total_bytes", "Physical memory of the host (MemTotal)."),
}


class HostCollector(Collector):
    """Memory pressure where the role runs and the expiry of its certificates; missing sources
    (no PSI, no cgroup) are left out."""

    def __init__(self, certificates: list[Path], root: Path = Path("/")) -> None:
        self.certificates = certificates
        self.root = root

    def collect(self) -> Iterator[Metric]:
        """All figures available on this host right now."""
        for name, value in system_memory(self.root).items():
            yield GaugeMetricFamily(*SYSTEM[name], value=value)
        yield from self.pressure()
        yield from self.cgroup()
        yield from self.expiry()

    def pressure(self) -> Iterator[Metric]:
        """PSI stall shares over 10 s and 60 s, and total stalled time."""
        psi = read_pressure(pressure_file(self.root))
        if not psi:
            return
        ratio = GaugeMetricFamily(
            "fedllm_memory_pressure_ratio",
            "Share of time some/all tasks stalled on memory, PSI average over the window.",
            labels=["kind", "window"],
        )
        stalled = CounterMetricFamily(
            "fedllm_memory_pressure_stalled_seconds",
            "Time some/all tasks stalled on memory (PSI total).",
            labels=["kind"],
        )
        for kind, line in psi.items():
            ratio.add_metric([kind, "10s"], line.avg10)
            ratio.add_metric([kind, "60s"], line.avg60)
            stalled.add_metric([kind], line.total_seconds)
        yield from (ratio, stalled)

    def cgroup(self) -> Iterator[Metric]:
        """Usage, limit and OOM kills of the memory cgroup."""
        memory = memory_cgroup(self.root)
        if memory is None:
            return
        yield GaugeMetricFamily(
            "fedllm_cgroup_memory_usage_bytes",
            "Memory charged to the cgroup.",
            value=memory.usage_bytes,
        )
        yield GaugeMetricFamily(
            "fedllm_cgroup_memory_limit_bytes",
            "Memory limit of the cgroup (+Inf when unlimited).",
            value=memory.limit_bytes,
        )
        if memory.oom_kills is not None:
            yield CounterMetricFamily(
                "fedllm_cgroup_oom_kills",
                "Processes the OOM killer ended in the cgroup.",
                value=memory.oom_kills,
            )

    def expiry(self) -> Iterator[Metric]:
        """Seconds until each readable certificate expires."""
        if not self.certificates:
            return
        family = GaugeMetricFamily(
            "fedllm_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once expired).",
            labels=["certificate"],
        )
        for path in self.certificates:
            with contextlib.suppress(FedllmError):  # replaced or removed since the start
                family.add_metric([path.stem], seconds_until_expiry(path))
        yield family

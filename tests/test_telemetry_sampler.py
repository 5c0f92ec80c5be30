"""App processes record their own memory: RSS, peak RSS and, on CUDA, GPU memory."""

import json
import subprocess
import sys

import pytest
import torch
from prometheus_client import REGISTRY

from fedllm.telemetry.gpu import record_gpu
from fedllm.telemetry.sampler import watch_memory

MIB = 2**20


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# Run in a fresh interpreter: the suite's own RSS, peak and freed-but-kept heap must not count.
WATCHED = """
import inspect
import json
from pathlib import Path

from prometheus_client import REGISTRY

from fedllm.telemetry.memory import process_memory
from fedllm.telemetry.sampler import watch_memory

MIB = 2**20


@watch_memory("test-app", interval=3600)
def handler(size: int) -> int:
    block = bytearray(size * MIB)  # zero-filled, so touched
    return len(block)


try:  # peak RSS back to the current RSS (Linux >= 4.0)
    Path("/proc/self/clear_refs").write_text("5")
except OSError:
    pass
before = process_memory()
handler(64)
labels = {"process": "test-app"}
print(json.dumps({
    "before": before[0] if before else None,
    "rss": REGISTRY.get_sample_value("fedllm_process_resident_memory_bytes", labels),
    "peak": REGISTRY.get_sample_value("fedllm_process_peak_resident_memory_bytes", labels),
    "name": handler.__name__,
    "parameters": list(inspect.signature(handler).parameters),
}))
"""


def test_a_watched_function_records_memory_when_it_returns() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WATCHED], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(done.stdout.splitlines()[-1])
    assert (found["name"], found["parameters"]) == ("handler", ["size"])
    assert found["before"] is not None and found["rss"] > 10 * MIB
    assert found["peak"] >= found["before"] + 60 * MIB  # the freed block still counts in the peak


def test_memory_is_recorded_when_the_function_fails() -> None:
    @watch_memory("failing-app", interval=3600)
    def handler() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        handler()
    assert value("fedllm_process_resident_memory_bytes", process="failing-app") is not None


def test_no_gpu_series_before_cuda_is_used() -> None:
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this process")
    record_gpu("cpu-app")
    assert value("fedllm_gpu_memory_total_bytes", process="cpu-app", device="0") is None


def test_gpu_memory_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda's figures per device, faked here on a CPU machine."""

    class Properties:
        total_memory = 80 * 2**30

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "memory_allocated", lambda index: 100 + index)
    monkeypatch.setattr(cuda, "memory_reserved", lambda index: 200 + index)
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda index: 300 + index)
    monkeypatch.setattr(cuda, "get_device_properties", lambda index: Properties())
    record_gpu("gpu-app")
    for device in ("0", "1"):
        labels = {"process": "gpu-app", "device": device}
        assert value("fedllm_gpu_memory_allocated_bytes", **labels) == 100 + int(device)
        assert value("fedllm_gpu_memory_reserved_bytes", **labels) == 200 + int(device)
        assert value("fedllm_gpu_memory_peak_allocated_bytes", **labels) == 300 + int(device)
        assert value("fedllm_gpu_memory_total_bytes", **labels) == 80 * 2**30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_on_a_real_device() -> None:
    """What a CUDA host exports while a process holds 256 MiB on its first GPU."""
    held = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda:0")
    record_gpu("cuda-app")
    labels = {"process": "cuda-app", "device": "0"}
    allocated = value("fedllm_gpu_memory_allocated_bytes", **labels)
    assert allocated is not None and allocated >= held.numel()
    reserved = value("fedllm_gpu_memory_reserved_bytes", **labels)
    assert reserved is not None and reserved >= allocated
    peak = value("fedllm_gpu_memory_peak_allocated_bytes", **labels)
    assert peak is not None and peak >= allocated
    total = torch.cuda.get_device_properties(0).total_memory
    assert value("fedllm_gpu_memory_total_bytes", **labels) == total
    del held
    record_gpu("cuda-app")
    after = value("fedllm_gpu_memory_allocated_bytes", **labels)
    assert after is not None and after < allocated

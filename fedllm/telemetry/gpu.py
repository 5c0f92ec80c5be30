"""GPU memory of this process, per CUDA device, through torch."""

import torch

from fedllm.telemetry import metrics


def record_gpu(process: str) -> None:
    """Allocated, reserved, peak and total memory per device; nothing until CUDA is in use."""
    if not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        labels = (process, str(index))
        metrics.GPU_ALLOCATED.labels(*labels).set(torch.cuda.memory_allocated(index))
        metrics.GPU_RESERVED.labels(*labels).set(torch.cuda.memory_reserved(index))
        metrics.GPU_PEAK.labels(*labels).set(torch.cuda.max_memory_allocated(index))
        total = torch.cuda.get_device_properties(index).total_memory
        metrics.GPU_TOTAL.labels(*labels).set(total)

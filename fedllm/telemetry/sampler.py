"""App processes record their own memory: RSS, peak RSS and GPU memory, while they work."""

import functools
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from fedllm.telemetry import metrics
from fedllm.telemetry.gpu import record_gpu
from fedllm.telemetry.memory import process_memory

P = ParamSpec("P")
R = TypeVar("R")
INTERVAL = 5.0
sampling: set[str] = set()  # processes of this interpreter with a sampler thread


def record_memory(process: str) -> None:
    """This process's RSS and peak RSS (VmHWM), and its GPU memory when it uses CUDA."""
    figures = process_memory()
    if figures is not None:
        metrics.RSS.labels(process).set(figures[0])
        metrics.PEAK_RSS.labels(process).set(figures[1])
    record_gpu(process)


def sample(process: str, interval: float) -> None:
    """Record memory every `interval` seconds until the process exits."""
    while True:
        record_memory(process)
        time.sleep(interval)


def watch_memory(
    process: str, interval: float = INTERVAL
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an app function: memory is sampled while it runs and recorded as it returns."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def watched(*args: P.args, **kwargs: P.kwargs) -> R:
            if process not in sampling:
                sampling.add(process)
                thread = threading.Thread(target=sample, args=(process, interval), daemon=True)
                thread.start()
            try:
                return function(*args, **kwargs)
            finally:
                record_memory(process)

        return watched

    return decorate

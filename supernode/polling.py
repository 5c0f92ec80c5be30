"""Shorter waits in Flower 1.42's SuperNode loop, which has no option for them.

The SuperNode asks the SuperLink for a message, and when there is none sleeps 3 s before
asking again; a round's message waits 1.5 s on average (3 s at worst) before a node sees it.
Once its ClientApp runs, the loop checks every 0.5 s whether the reply is ready. This swaps
the `time` module of `flwr.supernode.start_client_internal` for one whose `sleep` uses
`idle` seconds between empty pulls and `local` seconds while waiting for the local reply.
Cost: an idle node makes 1/idle requests per second to the SuperLink instead of 1/3;
`FEDLLM_NODE_POLL_SECONDS` sets `idle` (3 restores Flower's pace, e.g. for many sites). It is
version-guarded like `fedllm.mtls`: a Flower whose loop changed is refused, not patched.
"""

import inspect
import os
import time
from types import ModuleType
from typing import Any

import flwr
import flwr.supernode.start_client_internal as loop

from fedllm.errors import FedllmError

SUPPORTED_FLOWER = "1.42."
FLOWER_IDLE, FLOWER_LOCAL = 3, 0.5  # the sleeps in Flower's loop, as written in its source
IDLE, LOCAL = 1.0, 0.05


class Waits(ModuleType):
    """The `time` module, with Flower's two loop sleeps shortened."""

    def __init__(self, idle: float, local: float) -> None:
        super().__init__("time")
        self.idle, self.local = idle, local

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        """Flower's idle or local wait shortened; any other sleep unchanged."""
        waits = {FLOWER_IDLE: self.idle, FLOWER_LOCAL: self.local}
        time.sleep(waits.get(seconds, seconds))


def check_flower() -> None:
    """Refuse a Flower whose SuperNode loop we have not read."""
    source = inspect.getsource(loop)
    expected = (f"time.sleep({FLOWER_IDLE})", f"time.sleep({FLOWER_LOCAL})")
    if not flwr.__version__.startswith(SUPPORTED_FLOWER) or not all(s in source for s in expected):
        raise RuntimeError(
            f"supernode.polling supports flwr {SUPPORTED_FLOWER}x; found flwr {flwr.__version__}:"
            " re-check the sleeps in flwr/supernode/start_client_internal.py"
        )


def idle_seconds() -> float:
    """`FEDLLM_NODE_POLL_SECONDS` when set (a positive number), else `IDLE`."""
    text = os.environ.get("FEDLLM_NODE_POLL_SECONDS", "")
    try:
        seconds = float(text) if text else IDLE
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise FedllmError(
            f"FEDLLM_NODE_POLL_SECONDS must be a positive number of seconds: {text!r}"
        )
    return seconds


def shorten_waits(idle: float | None = None, local: float = LOCAL) -> None:
    """From now on, this process's SuperNode loop waits `idle` / `local` seconds (idempotent)."""
    check_flower()
    idle = idle_seconds() if idle is None else idle
    loop.time = Waits(idle, local)

"""Shorter waits in Flower 1.42's SuperNode loop, which has no option for them.

The SuperNode asks the SuperLink for a message, and when there is none sleeps 3 s before
asking again; a round's message waits 1.5 s on average (3 s at worst) before a node sees it.
Once its ClientApp runs, the loop checks every 0.5 s whether the reply is ready. This swaps
the `time` module of `flwr.supernode.start_client_internal` for one whose `sleep` uses
`idle` seconds between empty pulls and `local` seconds while waiting for the local reply.
For `burst` seconds after the node last handled a message, empty pulls are `BURST_PACE`
apart instead: a federation's next message (evaluate after train, the next round) usually
follows within seconds, and a round waits for the last node to see it. A node that now pulls
a message while the ServerApp is still pushing its objects retries them after 0.05 s, not
Flower's 1 s (`fedllm.flower_internals.object_pulls`).
Cost: an idle node makes 1/idle requests per second to the SuperLink instead of 1/3, and
1/`BURST_PACE` for `burst` seconds after each message; `FEDLLM_NODE_POLL_SECONDS` sets
`idle` (3 restores Flower's pace, e.g. for many sites), `FEDLLM_NODE_BURST_SECONDS` sets
`burst` (0: none). A Flower whose loop changed is refused, not patched.
"""

import inspect
import math
import os
import time
from types import ModuleType
from typing import Any

import flwr.supernode.start_client_internal as loop

from fedllm.errors import FedllmError
from fedllm.flower_internals import require
from fedllm.flower_internals.object_pulls import prompt_pulls

FLOWER_IDLE, FLOWER_LOCAL = 3, 0.5  # the sleeps in Flower's loop, as written in its source
IDLE, LOCAL = 1.0, 0.05
BURST, BURST_PACE = 10.0, 0.1


class Waits(ModuleType):
    """The `time` module, with Flower's two loop sleeps shortened."""

    def __init__(self, idle: float, local: float, burst: float = 0.0) -> None:
        super().__init__("time")
        self.idle, self.local, self.burst = idle, local, burst
        self.handled = -math.inf  # when the loop last waited on a local reply

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        """Flower's idle or local wait shortened; any other sleep unchanged."""
        if seconds == FLOWER_LOCAL:
            self.handled = time.monotonic()
            seconds = self.local
        elif seconds == FLOWER_IDLE:
            recent = time.monotonic() - self.handled < self.burst
            seconds = min(self.idle, BURST_PACE) if recent else self.idle
        time.sleep(seconds)


def check_flower() -> None:
    """Refuse a Flower whose SuperNode loop we have not read."""
    source = inspect.getsource(loop)
    expected = (f"time.sleep({FLOWER_IDLE})", f"time.sleep({FLOWER_LOCAL})")
    require("polling", all(s in source for s in expected), "the sleeps")


def env_seconds(name: str, default: float, zero: bool = False) -> float:
    """Environment variable `name` as seconds (positive, or also 0 with `zero`), else `default`."""
    text = os.environ.get(name, "")
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = math.nan
    if not (seconds >= 0 if zero else seconds > 0) or not math.isfinite(seconds):
        kind = "a non-negative" if zero else "a positive"
        raise FedllmError(f"{name} must be {kind} number of seconds: {text!r}")
    return seconds


def shorten_waits(
    idle: float | None = None, local: float = LOCAL, burst: float | None = None
) -> None:
    """From now on, this process's SuperNode loop waits `idle` / `local` seconds (idempotent)."""
    check_flower()
    if idle is None:
        idle = env_seconds("FEDLLM_NODE_POLL_SECONDS", IDLE)
    if burst is None:
        burst = env_seconds("FEDLLM_NODE_BURST_SECONDS", BURST, zero=True)
    loop.time = Waits(idle, local, burst)
    prompt_pulls(loop)

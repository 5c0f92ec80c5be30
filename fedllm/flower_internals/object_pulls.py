"""Prompt retries when a message is pulled while its objects are still arriving.

The SuperLink hands out a message as soon as its sender has pushed the message itself, while
the sender is still pushing its objects (the adapter's arrays, ~0.2 s on loopback). Flower
1.42 pulls them with `pull_objects`' defaults: an object not there yet is asked for again
after 1 s, then 2 s... up to 10 s. The ServerApp, polling for replies every 0.2 s
(`superlink.round_grid`), nearly always lands in that window for a round's last reply, and so
does a SuperNode polling quickly after a message (`polling`) for the next one: the round then
lost ~1 s. Likewise a SuperExec starts a ClientApp before its SuperNode has pulled the
message's objects: Flower's own `flwr-clientapp` imports for seconds first and rarely asks
early, a forked one (`prefork`) always does. `prompt_pulls(module)` gives that module's
`pull_objects`, and `prompt_clientapp_pulls()` a ClientApp's pull of its message, a 0.05 s
first retry doubling to 2 s (Flower's 500 tries per object still apply). A Flower that pulls
differently is refused, not patched.
"""

import inspect
from functools import partial
from types import ModuleType

from flwr.supercore.inflatable import inflatable_utils

from fedllm.flower_internals import require

BACKOFF = {"initial_backoff": 0.05, "backoff_cap": 2.0}
FLOWER_BACKOFF = {"initial_backoff": 1, "backoff_cap": 10}  # as written in Flower 1.42


def check_flower(module: ModuleType) -> None:
    """Refuse a Flower whose `module` does not call `pull_objects` with its defaults."""
    defaults = inflatable_utils.pull_objects.__kwdefaults__ or {}
    imported = getattr(module, "pull_objects", None) is inflatable_utils.pull_objects
    source = inspect.getsource(module) if imported else ""
    fits = (
        imported
        and {key: defaults.get(key) for key in FLOWER_BACKOFF} == FLOWER_BACKOFF
        and "pull_objects(" in source
        and not any(key in source for key in FLOWER_BACKOFF)
    )
    require("object_pulls", fits, f"how {module.__name__} pulls message objects")


def prompt_pulls(module: ModuleType) -> None:
    """From now on, `module` retries an object that is not there yet sooner (idempotent)."""
    if isinstance(getattr(module, "pull_objects", None), partial):
        return
    check_flower(module)
    module.pull_objects = partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects,
        initial_backoff=BACKOFF["initial_backoff"],
        backoff_cap=BACKOFF["backoff_cap"],
    )


def prompt_reply_pulls() -> None:
    """The ServerApp's grid (this process) pulls a reply still arriving promptly."""
    from flwr.superlink.grid import http_grid

    prompt_pulls(http_grid)


def prompt_clientapp_pulls() -> None:
    """A ClientApp (this process) pulls a message whose objects are still arriving promptly."""
    defaults = inflatable_utils.pull_and_inflate_object_from_tree.__kwdefaults__
    fits = defaults is not None and set(BACKOFF) <= set(defaults)
    require("object_pulls", fits, "pull_and_inflate_object_from_tree")
    assert defaults is not None
    defaults.update(BACKOFF)

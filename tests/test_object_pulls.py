"""Messages pulled while their objects are still arriving are retried within 0.05 s, not 1 s."""

import time
from collections.abc import Callable

import flwr
import flwr.supernode.start_client_internal as loop
import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError
from flwr.superlink.grid import http_grid

from fedllm import object_pulls
from supernode import polling


@pytest.fixture(autouse=True)
def restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_grid, "pull_objects", inflatable_utils.pull_objects)
    monkeypatch.setattr(loop, "pull_objects", inflatable_utils.pull_objects)
    monkeypatch.setattr(loop, "time", time)


def arriving_after(seconds: float) -> tuple[list[float], Callable[[str], bytes]]:
    """A pull function whose object is there `seconds` after the first try; the try times."""
    tries: list[float] = []

    def pull(object_id: str) -> bytes:
        tries.append(time.monotonic())
        if tries[-1] - tries[0] < seconds:
            raise ObjectUnavailableError(object_id)
        return b"content"

    return tries, pull


def test_a_reply_still_arriving_is_pulled_soon_after_it_arrives() -> None:
    object_pulls.prompt_reply_pulls()
    object_pulls.prompt_reply_pulls()  # idempotent
    tries, pull = arriving_after(0.2)
    started = time.monotonic()
    assert http_grid.pull_objects(["a"], pull) == {"a": b"content"}
    assert time.monotonic() - started < 0.6  # Flower's own first retry alone waits 0.8-1.2 s
    assert len(tries) >= 3


def test_the_supernode_loop_pulls_promptly_too() -> None:
    polling.shorten_waits(idle=1.0)
    _, pull = arriving_after(0.2)
    started = time.monotonic()
    assert loop.pull_objects(["a"], pull) == {"a": b"content"}
    assert time.monotonic() - started < 0.6


def test_flowers_own_pull_is_what_was_patched() -> None:
    _, pull = arriving_after(0.01)
    started = time.monotonic()
    http_grid.pull_objects(["a"], pull)
    assert time.monotonic() - started > 0.7  # the wait this module exists to shorten


def test_an_unread_flower_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(RuntimeError, match="re-check how"):
        object_pulls.prompt_reply_pulls()
    assert http_grid.pull_objects is inflatable_utils.pull_objects


def test_a_module_that_pulls_differently_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_grid, "pull_objects", lambda *args, **kwargs: {})
    with pytest.raises(RuntimeError, match="re-check how"):
        object_pulls.prompt_reply_pulls()
    with pytest.raises(RuntimeError, match="re-check how"):
        object_pulls.prompt_pulls(time)  # no pull_objects at all


def test_a_clientapp_pulls_its_message_promptly(monkeypatch: pytest.MonkeyPatch) -> None:
    pull = inflatable_utils.pull_and_inflate_object_from_tree
    assert pull.__kwdefaults__ is not None
    monkeypatch.setattr(pull, "__kwdefaults__", dict(pull.__kwdefaults__))
    object_pulls.prompt_clientapp_pulls()
    assert {key: pull.__kwdefaults__[key] for key in object_pulls.BACKOFF} == object_pulls.BACKOFF
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(RuntimeError, match="re-check"):
        object_pulls.prompt_clientapp_pulls()

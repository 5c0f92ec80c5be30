"""Messages pulled while their objects are still arriving are retried within 0.05 s, not 1 s.

Flower waits between tries with `threading.Event.wait`: the tests record those waits
instead of timing them, so they do not depend on the machine's load.
"""

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import flwr
import flwr.supernode.start_client_internal as loop
import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError
from flwr.superlink.grid import http_grid

from fedllm.flower_internals import object_pulls, polling


@pytest.fixture(autouse=True)
def restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_grid, "pull_objects", inflatable_utils.pull_objects)
    monkeypatch.setattr(loop, "pull_objects", inflatable_utils.pull_objects)
    monkeypatch.setattr(loop, "time", time)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait between tries, in seconds; none of them is slept."""
    waited: list[float] = []

    class Event(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waited.append(timeout or 0.0)
            return self.is_set()

    fake = SimpleNamespace(Event=Event, Lock=threading.Lock)
    monkeypatch.setattr(inflatable_utils, "threading", fake)
    return waited


def arriving_after(tries: int) -> Callable[[str], bytes]:
    """A pull function whose object is there from its `tries`-th try on."""
    count = [0]

    def pull(object_id: str) -> bytes:
        count[0] += 1
        if count[0] < tries:
            raise ObjectUnavailableError(object_id)
        return b"content"

    return pull


def test_a_reply_still_arriving_is_pulled_soon_after_it_arrives(waits: list[float]) -> None:
    object_pulls.prompt_reply_pulls()
    object_pulls.prompt_reply_pulls()  # idempotent
    assert http_grid.pull_objects(["a"], arriving_after(4)) == {"a": b"content"}
    # 0.05 s doubling, each +-20%: Flower's own first retry alone waits 0.8-1.2 s.
    assert len(waits) == 3 and sum(waits) < (0.05 + 0.1 + 0.2) * 1.2


def test_the_supernode_loop_pulls_promptly_too(waits: list[float]) -> None:
    polling.shorten_waits(idle=1.0)
    assert loop.pull_objects(["a"], arriving_after(4)) == {"a": b"content"}
    assert len(waits) == 3 and sum(waits) < 0.35 * 1.2


def test_flowers_own_pull_is_what_was_patched(waits: list[float]) -> None:
    http_grid.pull_objects(["a"], arriving_after(2))
    assert waits and waits[0] >= 0.8  # the wait this module exists to shorten


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

"""The SuperNode loop's waits, shortened in a version-guarded way."""

import time

import flwr
import flwr.supernode.start_client_internal as loop
import pytest

from fedllm.errors import FedllmError
from supernode import polling


@pytest.fixture(autouse=True)
def restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "time", time)


def test_only_flowers_two_loop_waits_are_shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    polling.shorten_waits(idle=1.0, local=0.05)
    for seconds in (3, 0.5, 2.0):
        loop.time.sleep(seconds)
    assert slept == [1.0, 0.05, 2.0]
    assert abs(loop.time.time() - time.time()) < 1.0  # everything else is the time module


def test_an_unread_flower_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(RuntimeError, match="re-check the sleeps"):
        polling.shorten_waits()
    assert loop.time is time


def test_the_idle_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLLM_NODE_POLL_SECONDS", "3")
    polling.shorten_waits()
    assert loop.time.idle == 3.0
    monkeypatch.setenv("FEDLLM_NODE_POLL_SECONDS", "soon")
    with pytest.raises(FedllmError, match="FEDLLM_NODE_POLL_SECONDS"):
        polling.shorten_waits()

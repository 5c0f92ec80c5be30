"""The SuperNode loop's waits, shortened in a version-guarded way."""

import time

import flwr
import flwr.supernode.start_client_internal as loop
import pytest

from fedllm.errors import FedllmError
from fedllm.flower_internals import polling


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


def test_empty_pulls_come_quicker_for_a_while_after_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    clock = [100.0]
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    polling.shorten_waits(idle=1.0, local=0.05, burst=10.0)
    loop.time.sleep(3)  # idle since start: Flower's idle wait, shortened
    loop.time.sleep(0.5)  # a message was handled: its reply awaited
    clock[0] += 9.0
    loop.time.sleep(3)  # within the burst
    clock[0] += 1.5
    loop.time.sleep(3)  # after it
    assert slept == [1.0, 0.05, polling.BURST_PACE, 1.0]


def test_no_burst_and_no_quicker_than_the_idle_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setenv("FEDLLM_NODE_BURST_SECONDS", "0")
    polling.shorten_waits(idle=1.0)
    loop.time.sleep(0.5)
    loop.time.sleep(3)
    polling.shorten_waits(idle=0.05, burst=10.0)
    loop.time.sleep(0.5)
    loop.time.sleep(3)
    assert slept == [0.05, 1.0, 0.05, 0.05]


def test_the_burst_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLLM_NODE_BURST_SECONDS", "30")
    polling.shorten_waits()
    assert loop.time.burst == 30.0
    monkeypatch.delenv("FEDLLM_NODE_BURST_SECONDS")
    polling.shorten_waits()
    assert loop.time.burst == polling.BURST
    for wrong in ("-1", "nan", "later"):
        monkeypatch.setenv("FEDLLM_NODE_BURST_SECONDS", wrong)
        with pytest.raises(FedllmError, match="FEDLLM_NODE_BURST_SECONDS"):
            polling.shorten_waits()

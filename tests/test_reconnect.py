"""The SuperNode's retry policy: a cut-short TLS handshake is retried, the rest is Flower's."""

import socket
import ssl
from collections.abc import Iterator

import flwr
import flwr.supernode.fleet_http_connection as fleet
import httpx
import pytest
from flwr.supercore.retry import make_simple_http_retry_invoker

from fedllm.flower_internals import reconnect
from tests.relay import Relay


@pytest.fixture(autouse=True)
def restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "make_simple_http_retry_invoker", make_simple_http_retry_invoker)


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A relay to a port that never answers TLS (the relay is cut by each test)."""
    with socket.create_server(("127.0.0.1", 0)) as server, Relay(server.getsockname()) as cut:
        yield cut


def failure(port: int) -> httpx.TransportError:
    """What a TLS request to 127.0.0.1:`port` fails with."""
    with pytest.raises(httpx.TransportError) as caught:
        httpx.get(f"https://127.0.0.1:{port}/", timeout=5)
    return caught.value


def test_a_handshake_the_peer_closes_is_retried_where_flower_gives_up(relay: Relay) -> None:
    relay.cut()
    error = failure(relay.port)
    assert reconnect.cut_short(error)
    assert make_simple_http_retry_invoker().should_giveup(error)  # type: ignore[misc]
    assert not reconnect.patient().should_giveup(error)  # type: ignore[misc]


def test_a_peer_that_does_not_speak_tls_is_still_given_up_on(relay: Relay) -> None:
    relay.cut(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    error = failure(relay.port)
    assert not reconnect.cut_short(error)
    assert reconnect.patient().should_giveup(error)  # type: ignore[misc]


def test_other_errors_are_judged_by_flower() -> None:
    request = httpx.Request("POST", "https://superlink/v1/fleet/pull-messages")
    refused = httpx.ConnectError("[Errno 111] Connection refused", request=request)
    bad_certificate = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]", request=request)
    bad_certificate.__context__ = ssl.SSLCertVerificationError("certificate verify failed")
    internal = httpx.HTTPStatusError(
        "500", request=request, response=httpx.Response(500, request=request)
    )
    policy = reconnect.patient()
    assert policy.should_giveup is not None
    assert not policy.should_giveup(refused)
    assert policy.should_giveup(bad_certificate)
    assert policy.should_giveup(internal)
    assert not reconnect.cut_short(ssl.SSLEOFError())  # only as the cause of an HTTP error


def test_the_supernode_connection_is_patched_only_on_the_flower_it_was_read_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reconnect.retry_cut_handshakes()
    assert fleet.make_simple_http_retry_invoker is reconnect.patient
    reconnect.retry_cut_handshakes()  # idempotent
    assert reconnect.patient().should_giveup is not None
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    with pytest.raises(RuntimeError, match="re-check"):
        reconnect.retry_cut_handshakes()

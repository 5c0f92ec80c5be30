"""The SuperNode keeps retrying when a TLS handshake is cut short, as it does a refused connection.

Flower 1.42's SuperNode retries connection errors with backoff, but gives up for good on one
whose text mentions SSL, TLS or a certificate, so that a wrong certificate fails fast. A
handshake that ends in an EOF is not that: it is what a published container port (Docker's
proxy), a load balancer or an ingress answers while the SuperLink behind it restarts. Given
up on, the node leaves the federation (`fedllm supernode` then exits for a restart). This
wraps the retry policy of the SuperNode's Fleet connection so that such an EOF is retried;
every other error is judged by Flower's own policy.

A node key the gateway does not accept for this certificate (unregistered, or another site's)
is final: Flower would take that 403 for a stopped run and hang; giving up makes the node exit.
"""

import ssl
from collections.abc import Callable

import flwr.supernode.fleet_http_connection as fleet
import httpx
from flwr.supercore.retry import RetryInvoker, make_simple_http_retry_invoker

from fedllm.flower_internals import require

# The peer closed the connection during the handshake: an EOF against the protocol
# (OpenSSL 3) or a TLS close before any data (older builds, e.g. Debian bookworm's Python).
CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError)
# The body of the gateway's refusal of a node key (superlink/nginx.conf.template).
KEY_REFUSED = "fedllm gateway: node key not registered"


def cut_short(error: BaseException) -> bool:
    """A transport error caused by a TLS handshake the peer closed, not by its certificate."""
    if not isinstance(error, httpx.TransportError):
        return False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, CUT_SHORT):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def patient(make: Callable[[], RetryInvoker] = make_simple_http_retry_invoker) -> RetryInvoker:
    """Flower's retry policy for the SuperNode, except that a cut-short handshake is retried."""
    invoker = make()
    gives_up = invoker.should_giveup

    def should_giveup(error: Exception) -> bool:
        if cut_short(error):
            return False
        if isinstance(error, httpx.HTTPStatusError) and KEY_REFUSED in error.response.text:
            return True
        return gives_up(error) if gives_up is not None else False

    invoker.should_giveup = should_giveup
    return invoker


def check_flower() -> None:
    """Refuse a Flower whose SuperNode connection we have not read."""
    fits = hasattr(fleet, "make_simple_http_retry_invoker")
    require("reconnect", fits, "how the Fleet connection makes its retry policy")


def retry_cut_handshakes() -> None:
    """From now on, this process's SuperNode connections retry cut-short handshakes."""
    check_flower()
    fleet.make_simple_http_retry_invoker = patient

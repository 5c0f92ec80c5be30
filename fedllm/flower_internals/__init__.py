"""Everything fedllm changes or uses inside Flower 1.42, where Flower has no public API for it.

- `mtls`: HTTP clients present a client certificate (`ProtobufClient.__init__`).
- `object_pulls`: an object still arriving is asked for again after 0.05 s, not 1 s.
- `polling`: shorter sleeps in the SuperNode's loop.
- `reconnect`: a TLS handshake cut short by a restarting proxy is retried, not fatal.
- `prefork`: ClientApp processes forked from a parent that imported torch once.
- `secagg`: Flower's secure-aggregation primitives (Shamir, key agreement, quantization).
- `distributed_dp`: Flower's client-side DP wrapper without its central noise step.

Each was written by reading the Flower files in `FLOWER_FILES`. Importing this package under
another Flower version fails, naming them; each patch also checks the code it is about to change
(`require`) and refuses rather than patch something it has not read.
"""

import flwr

SUPPORTED_FLOWER = "1.42."
FLOWER_FILES = {
    "mtls": "flwr/supercore/protobuf/client.py",
    "object_pulls": "flwr/supercore/inflatable/inflatable_utils.py",
    "polling": "flwr/supernode/start_client_internal.py",
    "reconnect": "flwr/supernode/fleet_http_connection.py",
    "prefork": "flwr/supernode/cli/flwr_clientapp.py",
    "secagg": "flwr/common/secure_aggregation/",
    "distributed_dp": "flwr/serverapp/strategy/dp_fixed_clipping.py",
}


class UnsupportedFlower(RuntimeError):
    """Flower is not the version, or not the code, a patch was written against."""


def check_version(version: str) -> None:
    """Refuse a Flower other than the one every patch here was checked against."""
    if not version.startswith(SUPPORTED_FLOWER):
        raise UnsupportedFlower(
            f"fedllm.flower_internals supports flwr {SUPPORTED_FLOWER}x; found flwr {version}:"
            f" re-check {', '.join(FLOWER_FILES.values())}"
        )


def require(patch: str, fits: bool, what: str) -> None:
    """Refuse to apply `patch` when Flower's version or the code it changes (`what`) differs."""
    if not fits or not flwr.__version__.startswith(SUPPORTED_FLOWER):
        raise UnsupportedFlower(
            f"fedllm.flower_internals.{patch} supports flwr {SUPPORTED_FLOWER}x; found flwr"
            f" {flwr.__version__}: re-check {what} in {FLOWER_FILES[patch]}"
        )


check_version(flwr.__version__)

"""Flower's secure-aggregation primitives, used through one door.

Flower 1.42 keeps Shamir secret sharing, ECDH key agreement, Fernet encryption and stochastic
quantization under `flwr.common.secure_aggregation` and `flwr.supercore.primitives`, outside
its public API. fedllm's SecAgg+ rounds (`superlink.secure_round`, `supernode.secure_aggregation`)
import them only from here; `require` checks their signatures before use.
"""

import inspect
from collections.abc import Callable

from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from fedllm.flower_internals import require

EXPECTED: dict[Callable[..., object], tuple[str, ...]] = {
    create_shares: ("secret", "threshold", "num"),
    combine_shares: ("share_list",),
    generate_shared_key: ("private_key", "public_key"),
    encrypt: ("key", "plaintext"),
    decrypt: ("key", "ciphertext"),
    quantize: ("parameters", "clipping_range", "target_range"),
    share_keys_plaintext_concat: ("src_node_id", "dst_node_id", "b_share", "sk_share"),
}
require(
    "secagg",
    all(tuple(inspect.signature(f).parameters) == names for f, names in EXPECTED.items()),
    "the secure-aggregation primitives' signatures",
)

__all__ = [
    "bytes_to_private_key",
    "bytes_to_public_key",
    "combine_shares",
    "create_shares",
    "decrypt",
    "encrypt",
    "generate_key_pairs",
    "generate_shared_key",
    "private_key_to_bytes",
    "public_key_to_bytes",
    "quantize",
    "share_keys_plaintext_concat",
    "share_keys_plaintext_separate",
]

"""Secure aggregation as fedllm runs it: stages, message contents, masks and quantization.

Each training round becomes four exchanges over the Grid (SecAgg+, Bell et al. 2020, with
every pair of sampled sites as neighbours): `setup` (each site sends two fresh public keys),
`share-keys` (each site Shamir-shares its mask seed and its pairwise-mask key, encrypted for
each other site), `collect` (each site trains and sends its update quantized and masked) and
`unmask` (the survivors send the shares that remove the masks). The server ends with the sum
of the survivors' weighted updates and nothing else: every masked vector is uniform noise
without the seeds of the others. Shared by the ServerApp (`superlink.secure_round`) and the
sites (`supernode.secure_aggregation`).
"""

import math

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import ConfigRecord, Message

from fedllm.errors import FedllmError
from fedllm.settings import RunSettings

SECAGG = "secagg"  # config record: the stage, in messages and in protocol replies
MASKED = "masked"  # array record: a site's masked update
SETUP, SHARE_KEYS, COLLECT, UNMASK = "setup", "share-keys", "collect", "unmask"
# What a site's reply to each key stage may carry (the collect reply is an update).
REPLY_KEYS = {
    SETUP: frozenset({"pk1", "pk2"}),
    SHARE_KEYS: frozenset({"dsts", "ctxts"}),
    UNMASK: frozenset({"nids", "shares"}),
}
SITE_METRICS = frozenset({"secagg-weight", "secagg-clipped"})  # a masked update's own metrics
TARGET_RANGE = 1 << 22  # quantization levels over [-clip, clip]
MODULUS = 1 << 32  # masked values live modulo this: room for 1,024 sites' quantized sums
WIRE = "uint32"  # a masked value on the wire: exactly the range modulo MODULUS
MAX_WEIGHT = 1000.0  # with weighting by examples, an update is scaled by num-examples / this
# Strategies that need every site's own update, not only their sum.
NEEDS_EACH_UPDATE = frozenset({"fedmedian", "fedtrimmedavg", "krum", "bulyan"})


def stage_of(message: Message) -> str | None:
    """The secure-round stage a training message asks for; None outside secure rounds."""
    record = message.content.config_records.get(SECAGG) if message.has_content() else None
    if record is None or not message.metadata.message_type.startswith("train"):
        return None
    return str(record.get("stage"))


def check_secure_aggregation(run: RunSettings, sites: int | None = None) -> None:
    """One-line error for settings secure aggregation cannot honour."""
    if run.secure_aggregation == "none":
        return
    if run.strategy in NEEDS_EACH_UPDATE:
        raise FedllmError(
            f"secure-aggregation cannot be combined with strategy {run.strategy}: it needs each"
            " site's own update, and the server only sees their sum"
        )
    if run.dp == "server":
        raise FedllmError(
            "secure-aggregation cannot be combined with dp=server: the server would clip each"
            " site's update, which it never sees; use dp=sgd"
        )
    if run.secagg_threshold == 1:
        raise FedllmError("secagg-threshold must be at least 2 (1 would unmask a single site)")
    if sites is not None and threshold(run, sites) > sites:
        setting = (
            f"secagg-threshold {run.secagg_threshold}"
            if run.secagg_threshold
            else ("secure aggregation's threshold of 2")
        )
        raise FedllmError(f"{setting} is above the {sites} sites of the run")


def threshold(run: RunSettings, sampled: int) -> int:
    """Shares needed to unmask: the setting, or two thirds of the sampled sites (at least 2)."""
    return run.secagg_threshold or max(2, math.ceil(2 * sampled / 3))


def weight(run: RunSettings, examples: int) -> float:
    """How much a site's update counts in the sum: by its examples, or equally (always with
    `dp=client`, whose noise and accounting are sized for equal weights)."""
    equal = run.secagg_weighting == "equal" or run.dp == "client"
    return 1.0 if equal else examples / MAX_WEIGHT


def site_noise_std(run: RunSettings, needed: int) -> float:
    """Distributed DP: each site's noise std, so any `needed` survivors sum to the planned
    `dp-noise * dp-clip` (more survivors: more noise; Kairouz et al. 2021)."""
    return run.dp_noise * run.dp_clip / math.sqrt(needed) if run.dp == "client" else 0.0


def mask(seed: bytes, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Uniform values modulo `MODULUS` from ChaCha20 keyed by the whole seed (HKDF-SHA256)."""
    key = HKDF(hashes.SHA256(), length=32, salt=None, info=b"fedllm secagg mask").derive(seed)
    sizes = [math.prod(shape) for shape in shapes.values()]
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    flat = np.frombuffer(stream.update(bytes(4 * sum(sizes))), dtype="<u4").astype(np.int64)
    found, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        found[name] = flat[start : start + size].reshape(shape)
        start += size
    return found


def pair_sign(own: int, other: int) -> int:
    """A pairwise mask is added by the larger node id and subtracted by the smaller: they cancel."""
    return 1 if own > other else -1


def dequantize_sum(total: np.ndarray, sites: int, clip: float) -> np.ndarray:
    """The sum of `sites` quantized vectors (each shifted by `clip`) back to floats."""
    return total.astype(np.float64) * (2 * clip / TARGET_RANGE) - sites * clip


def quantization_bound(clip: float, sites: int, total_weight: float) -> float:
    """Largest difference per value between the secure and the plain weighted mean.

    Stochastic rounding moves each site's value by less than one level, `2·clip/TARGET_RANGE`;
    the mean divides the sum of `sites` such errors by the total weight.
    """
    return sites * (2 * clip / TARGET_RANGE) / total_weight


def protocol_record(**values: list[int] | list[bytes] | bytes | str) -> ConfigRecord:
    """A protocol record; empty lists are left out (Flower's records cannot size them)."""
    return ConfigRecord(
        {key.replace("_", "-"): value for key, value in values.items() if value != []}
    )


def ints(record: ConfigRecord, key: str) -> list[int]:
    """A list of node ids (or counts) from a protocol record; missing: empty."""
    value = record.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list")
    return [int(item) for item in value]


def blobs(record: ConfigRecord, key: str) -> list[bytes]:
    """A list of keys, ciphertexts or shares from a protocol record; missing: empty."""
    value = record.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} is not a list of bytes")
    found = [item for item in value if isinstance(item, bytes)]
    if len(found) != len(value):
        raise ValueError(f"{key} is not a list of bytes")
    return found


def blob(record: ConfigRecord, key: str) -> bytes:
    """One key or seed from a protocol record."""
    value = record[key]
    if not isinstance(value, bytes):
        raise ValueError(f"{key} is not bytes")
    return value

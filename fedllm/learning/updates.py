"""Compressed updates: a node sends `trained - received` in 16 bits; the server adds it back.

With `update-dtype` float16 or bfloat16 a node replies with an ArrayRecord named
`delta-<dtype>` instead of `arrays`. Rounding the difference rather than the weights keeps the
error relative to the (small) update: a bfloat16 weight has only 8 bits of mantissa, so an
update smaller than 1/256 of a weight would round away entirely. The server turns the delta
back into float32 weights before its strategy and update guard see the reply.
"""

from typing import get_args

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from fedllm.settings import UpdateDtype

UPDATE_DTYPES: tuple[str, ...] = get_args(UpdateDtype)
WEIGHTS = "arrays"  # full float32 weights, as Flower's strategies expect them
PREFIX = "delta-"


def to_wire(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as float16, or as bfloat16 bit patterns in uint16 (numpy has no bfloat16)."""
    if dtype == "float16":
        return values.astype(np.float16)
    if dtype == "bfloat16":
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest, ties to even
        return (rounded >> 16).astype(np.uint16)
    return values.astype(np.float32)


def from_wire(values: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values `to_wire` encoded."""
    if dtype == "bfloat16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def encode_update(
    trained: dict[str, np.ndarray], received: dict[str, np.ndarray], dtype: str
) -> tuple[str, ArrayRecord]:
    """(record name, record) of a node's reply: float32 weights, or the delta in `dtype`."""
    if dtype == "float32":
        return WEIGHTS, ArrayRecord({name: Array(value) for name, value in trained.items()})
    delta = {
        name: Array(to_wire(value.astype(np.float32) - received[name].astype(np.float32), dtype))
        for name, value in trained.items()
    }
    return PREFIX + dtype, ArrayRecord(delta)


def decode_update(delta: ArrayRecord, dtype: str, base: ArrayRecord) -> ArrayRecord | None:
    """`base` + the decoded delta as float32 weights; None when they do not match up."""
    if dtype not in UPDATE_DTYPES or set(delta) != set(base):
        return None
    weights = {}
    for name, array in base.items():
        values = from_wire(delta[name].numpy(), dtype)
        if values.shape != tuple(array.shape):
            return None
        weights[name] = Array(array.numpy().astype(np.float32) + values)
    return ArrayRecord(weights)


def decode_reply(content: RecordDict, base: ArrayRecord | None) -> RecordDict:
    """A reply with its `delta-<dtype>` record turned into float32 `arrays`.

    A delta that cannot be decoded is left as it is, so the update guard refuses it
    (its names, shapes or dtypes differ from the global adapter) and says why.
    """
    names = [name for name in content.array_records if name.startswith(PREFIX)]
    if not names or base is None:
        return content
    delta = content.array_records[names[0]]
    decoded = decode_update(delta, names[0].removeprefix(PREFIX), base)
    if decoded is None:
        return content
    records = {name: record for name, record in content.items() if name != names[0]}
    return RecordDict({WEIGHTS: decoded, **records})

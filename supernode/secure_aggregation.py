"""The site's side of a secure round: a ClientApp mod (protocol in `fedllm.privacy.secagg`).

Key stages are answered here, without training. In `collect` the wrapped app trains as usual
and its update leaves only weighted, quantized and masked; with `dp=client` (clipped by the
inner mod) it first gets this site's share of the Gaussian noise. The site's private keys, its mask
seed and the shares it holds for others stay in the node's run context (`context.state`, kept
by the SuperNode between messages), never in a reply.
"""

import os

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable

from fedllm.flower_internals.secagg import (
    bytes_to_private_key,
    bytes_to_public_key,
    create_shares,
    decrypt,
    encrypt,
    generate_key_pairs,
    generate_shared_key,
    private_key_to_bytes,
    public_key_to_bytes,
    quantize,
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from fedllm.learning.updates import WEIGHTS, decode_reply
from fedllm.privacy.secagg import (
    COLLECT,
    MASKED,
    MODULUS,
    SECAGG,
    SETUP,
    SHARE_KEYS,
    TARGET_RANGE,
    UNMASK,
    WIRE,
    blob,
    blobs,
    ints,
    mask,
    pair_sign,
    site_noise_std,
    weight,
)
from fedllm.settings import RunSettings, from_flower_config

STATE = "secagg-state"
FAILED = 4032  # a site's reply when a secure stage cannot go on (error code, like REFUSED)


class StageError(Exception):
    """A stage message this site will not answer; the reason leaves as an error reply."""


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: answer SecAgg+ stages; mask the update of a `collect` message."""
    config = msg.content.config_records.get(SECAGG)
    if config is None or not msg.metadata.message_type.startswith("train"):
        return call_next(msg, context)
    stage, node = str(config["stage"]), msg.metadata.dst_node_id
    try:
        if stage == COLLECT:
            return collect(msg, context, call_next, config, node)
        if stage == SETUP:
            answer = setup(context, node)
        elif stage == SHARE_KEYS:
            answer = share_keys(context, config, node)
        elif stage == UNMASK:
            answer = unmask(context, config, node)
        else:
            raise StageError(f"unknown stage {stage!r}")
    except (StageError, KeyError, ValueError) as err:
        reason = f"secure aggregation, {stage}: {err}"
        return Message(error=Error(code=FAILED, reason=reason), reply_to=msg)
    return Message(content=RecordDict({SECAGG: answer}), reply_to=msg)


def setup(context: Context, node: int) -> ConfigRecord:
    """Two fresh key pairs: one to encrypt shares, one to agree on pairwise masks."""
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    pk1_bytes, pk2_bytes = public_key_to_bytes(pk1), public_key_to_bytes(pk2)
    context.state[STATE] = ConfigRecord({
        "node": [node], "sk1": private_key_to_bytes(sk1), "sk2": private_key_to_bytes(sk2),
        "pk1": pk1_bytes, "pk2": pk2_bytes,
    })  # fmt: skip
    return ConfigRecord({"pk1": pk1_bytes, "pk2": pk2_bytes})


def share_keys(context: Context, config: ConfigRecord, node: int) -> ConfigRecord:
    """Shares of the mask seed and of the pairwise key, each encrypted for its holder."""
    state = context.state.config_records[STATE]
    nids, pk1s, pk2s = ints(config, "nids"), blobs(config, "pk1s"), blobs(config, "pk2s")
    needed = ints(config, "threshold")[0]
    if len(set(nids)) != len(nids) or needed < 2 or len(nids) < needed:
        raise StageError(f"{len(nids)} sites for a threshold of {needed}")
    own = nids.index(node) if node in nids else -1
    if own < 0 or (pk1s[own], pk2s[own]) != (blob(state, "pk1"), blob(state, "pk2")):
        raise StageError("this site's keys are not the ones it advertised")
    seed = os.urandom(32)
    seed_shares = create_shares(seed, needed, len(nids))
    key_shares = create_shares(blob(state, "sk2"), needed, len(nids))
    sk1 = bytes_to_private_key(blob(state, "sk1"))
    dsts, ctxts = [], []
    for index, nid in enumerate(nids):
        if nid != node:
            key = generate_shared_key(sk1, bytes_to_public_key(pk1s[index]))
            plain = share_keys_plaintext_concat(node, nid, seed_shares[index], key_shares[index])
            dsts.append(nid)
            ctxts.append(encrypt(key, plain))
    state.update({
        "seed": seed, "nids": nids, "pk1s": pk1s, "pk2s": pk2s, "threshold": [needed],
        "srcs": [node], "seed-shares": [seed_shares[own]], "key-shares": [key_shares[own]],
    })  # fmt: skip
    return ConfigRecord({"dsts": dsts, "ctxts": ctxts})


def receive_shares(state: ConfigRecord, config: ConfigRecord, node: int) -> list[int]:
    """Decrypt the shares the other sites sent this one; returns their node ids."""
    nids, pk1s = ints(state, "nids"), blobs(state, "pk1s")
    sk1 = bytes_to_private_key(blob(state, "sk1"))
    srcs, ctxts = ints(config, "srcs"), blobs(config, "ctxts")
    held_srcs, seed_shares = ints(state, "srcs"), blobs(state, "seed-shares")
    key_shares = blobs(state, "key-shares")
    for src, ctxt in zip(srcs, ctxts, strict=True):
        if src not in nids or src == node:
            raise StageError(f"shares from {src}, which is not a partner")
        key = generate_shared_key(sk1, bytes_to_public_key(pk1s[nids.index(src)]))
        sender, receiver, seed_share, key_share = share_keys_plaintext_separate(decrypt(key, ctxt))
        if (sender, receiver) != (src, node):
            raise StageError(f"a share from {src} was addressed {sender} -> {receiver}")
        held_srcs.append(src)
        seed_shares.append(seed_share)
        key_shares.append(key_share)
    state.update({"srcs": held_srcs, "seed-shares": seed_shares, "key-shares": key_shares})
    if len(srcs) + 1 < ints(state, "threshold")[0]:
        raise StageError(f"shares from {len(srcs)} sites, below the threshold")
    return srcs


def masked_update(
    state: ConfigRecord, run: RunSettings, update: dict[str, np.ndarray], partners: list[int]
) -> tuple[dict[str, np.ndarray], int]:
    """The weighted update quantized, plus its own mask and ± a pairwise mask per partner."""
    clip = run.secagg_clip
    clipped = sum(int(np.count_nonzero(np.abs(values) > clip)) for values in update.values())
    quantized = quantize(list(update.values()), clip, TARGET_RANGE)
    shapes = {name: values.shape for name, values in update.items()}
    total = {name: q.astype(np.int64) for name, q in zip(update, quantized, strict=True)}
    masks = [(1, mask(blob(state, "seed"), shapes))]
    nids, pk2s = ints(state, "nids"), blobs(state, "pk2s")
    sk2, node = bytes_to_private_key(blob(state, "sk2")), ints(state, "node")[0]
    for other in partners:
        seed = generate_shared_key(sk2, bytes_to_public_key(pk2s[nids.index(other)]))
        masks.append((pair_sign(node, other), mask(seed, shapes)))
    for sign, values in masks:
        for name in total:
            total[name] = (total[name] + sign * values[name]) % MODULUS
    return total, clipped


def collect(
    msg: Message, context: Context, call_next: ClientAppCallable, config: ConfigRecord, node: int
) -> Message:
    """Train through the wrapped app, then send the update masked, never in the clear."""
    state = context.state.config_records[STATE]
    partners = receive_shares(state, config, node)
    full = msg.content  # the app and its mods (Flower's clipping mod) see the plain message
    msg.content = RecordDict({name: record for name, record in full.items() if name != SECAGG})
    try:
        reply = call_next(msg, context)
    finally:
        msg.content = full
    if reply.has_error():
        return reply
    received = msg.content.array_records[WEIGHTS]
    trained = decode_reply(reply.content, received).array_records[WEIGHTS]
    metrics = dict(reply.content.metric_records["metrics"])
    run = from_flower_config(RunSettings, context.run_config)
    scale = weight(run, int(metrics["num-examples"]))  # type: ignore[arg-type]
    noise = site_noise_std(run, ints(state, "threshold")[0])
    rng = np.random.default_rng()  # seeded from the OS: no party can predict the noise
    update = {
        name: (trained[name].numpy().astype(np.float64) - array.numpy()) * scale
        + (rng.normal(0.0, noise, array.shape) if noise else 0.0)
        for name, array in received.items()
    }
    total, clipped = masked_update(state, run, update, partners)
    metrics |= {"secagg-weight": scale, "secagg-clipped": clipped}
    content = RecordDict({
        MASKED: ArrayRecord({name: Array(values.astype(WIRE)) for name, values in total.items()}),
        "metrics": MetricRecord(metrics),
    })  # fmt: skip
    return Message(content=content, reply_to=msg)


def unmask(context: Context, config: ConfigRecord, node: int) -> ConfigRecord:
    """Seed shares of the survivors, key shares of the dropped; never both for one site."""
    state = context.state.config_records[STATE]
    active, dead, srcs = ints(config, "active"), ints(config, "dead"), ints(state, "srcs")
    if set(active) & set(dead) or node not in active:
        raise StageError("a site listed both as survivor and as dropped")
    if not set(active + dead) <= set(srcs):
        raise StageError("shares asked of sites this one holds none for")
    if len(active) < ints(state, "threshold")[0]:
        raise StageError(f"{len(active)} survivors, below the threshold")
    seed_shares, key_shares = blobs(state, "seed-shares"), blobs(state, "key-shares")
    shares = [seed_shares[srcs.index(nid)] for nid in active]
    shares += [key_shares[srcs.index(nid)] for nid in dead]
    del context.state[STATE]  # the round is over for this site: forget its keys
    return ConfigRecord({"nids": active + dead, "shares": shares})

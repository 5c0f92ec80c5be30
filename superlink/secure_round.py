"""The server's side of a secure round: SecAgg+ over the Grid (protocol in `fedllm.privacy.secagg`).

The strategy's training messages go out as four exchanges; what comes back to the strategy
is the survivors' replies, each carrying their weighted mean adapter, never a site's own
update. Each key stage waits at most `secagg-timeout` seconds, training at most the round's
timeout; a stage left with fewer sites than the threshold ends the round with
`SecureRoundFailed`.
"""

from collections.abc import Callable, Sized

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedllm.errors import FedllmError
from fedllm.flower_internals.secagg import (
    bytes_to_private_key,
    bytes_to_public_key,
    combine_shares,
    generate_shared_key,
)
from fedllm.learning.updates import WEIGHTS
from fedllm.privacy.secagg import (
    COLLECT,
    MASKED,
    MODULUS,
    REPLY_KEYS,
    SECAGG,
    SETUP,
    SHARE_KEYS,
    UNMASK,
    WIRE,
    blob,
    blobs,
    dequantize_sum,
    ints,
    mask,
    pair_sign,
    protocol_record,
    threshold,
)
from fedllm.settings import RunSettings

# What a masked update's metrics must say for the server to weigh it.
WEIGHED = frozenset({"num-examples", "secagg-weight"})
# (messages, timeout, stage name) -> replies: the RoundGrid's timed, recorded exchange.
Exchange = Callable[[list[Message], float | None, str], list[Message]]
Sums = dict[str, np.ndarray]


class SecureRoundFailed(FedllmError):
    """A secure round that cannot be unmasked: too few sites in one of its stages."""


def key_answers(replies: list[Message], stage: str) -> dict[int, ConfigRecord]:
    """Each node's well-formed answer to a key stage."""
    found = {}
    for reply in replies:
        record = reply.content.config_records.get(SECAGG) if reply.has_content() else None
        if record is not None and set(record) == REPLY_KEYS[stage]:
            found[reply.metadata.src_node_id] = record
    return found


def masked_answers(replies: list[Message], sent: ArrayRecord) -> dict[int, Message]:
    """Each node's well-formed masked update: the names and shapes sent, as `WIRE` integers."""
    shapes = {name: tuple(array.shape) for name, array in sent.items()}
    found = {}
    for reply in replies:
        if not reply.has_content() or MASKED not in reply.content.array_records:
            continue
        record = reply.content.array_records[MASKED]
        metrics = reply.content.metric_records.get("metrics", MetricRecord())
        got = {name: tuple(array.shape) for name, array in record.items()}
        wire = all(array.dtype == WIRE for array in record.values())
        if got == shapes and wire and set(metrics) >= WEIGHED:
            found[reply.metadata.src_node_id] = reply
    return found


class SecureRound:
    """One training round as SecAgg+; `train` returns the replies the strategy aggregates."""

    def __init__(self, run: RunSettings, exchange: Exchange, timeout: float | None) -> None:
        self.run, self.exchange, self.timeout = run, exchange, timeout

    def train(self, messages: list[Message]) -> list[Message]:
        """Setup, share keys, collect masked updates, unmask their sum."""
        sent = {message.metadata.dst_node_id: message for message in messages}
        needed = threshold(self.run, len(sent))
        self.enough(sent, needed, "were sampled")
        keys = self.ask(sent, SETUP, ConfigRecord())
        self.enough(keys, needed, "advertised keys")
        nids = list(keys)
        advertised = ConfigRecord({
            "nids": nids, "pk1s": [blob(keys[n], "pk1") for n in nids],
            "pk2s": [blob(keys[n], "pk2") for n in nids], "threshold": [needed],
        })  # fmt: skip
        shared = self.ask({n: sent[n] for n in nids}, SHARE_KEYS, advertised)
        self.enough(shared, needed, "shared their keys")
        collected = self.collect(sent, shared)
        self.enough(collected, needed, "sent a masked update")
        dead = [node for node in shared if node not in collected]
        survivors = {node: sent[node] for node in collected}
        unmask = protocol_record(active=list(collected), dead=dead)
        shares = self.ask(survivors, UNMASK, unmask)
        self.enough(shares, needed, "sent unmasking shares")
        total = unmasked_sum(collected, shares, dead, advertised)
        return self.aggregate(messages[0], collected, total, len(sent))

    def enough(self, nodes: Sized, needed: int, what: str) -> None:
        """Fail the round when fewer than `needed` sites got through a stage."""
        if len(nodes) < needed:
            raise SecureRoundFailed(
                f"secure round failed: {len(nodes)} sites {what}, the threshold is {needed}"
            )

    def ask(
        self, sent: dict[int, Message], stage: str, fields: ConfigRecord
    ) -> dict[int, ConfigRecord]:
        """Send a key stage (the same `fields` to all) to every node in `sent`; their
        well-formed answers."""
        record = ConfigRecord({**fields, "stage": stage})
        messages = [
            stage_message(original, RecordDict({SECAGG: record})) for original in sent.values()
        ]
        replies = self.exchange(messages, self.run.secagg_timeout, f"secagg-{stage}")
        return key_answers(replies, stage)

    def collect(
        self, sent: dict[int, Message], shared: dict[int, ConfigRecord]
    ) -> dict[int, Message]:
        """Route each site the shares addressed to it; train; the masked updates."""
        inbox: dict[int, tuple[list[int], list[bytes]]] = {node: ([], []) for node in shared}
        for src, record in shared.items():
            for dst, ctxt in zip(ints(record, "dsts"), blobs(record, "ctxts"), strict=True):
                if dst in inbox and dst != src:
                    inbox[dst][0].append(src)
                    inbox[dst][1].append(ctxt)
        messages = []
        for node, (srcs, ctxts) in inbox.items():
            content = RecordDict(dict(sent[node].content))
            content[SECAGG] = protocol_record(stage=COLLECT, srcs=srcs, ctxts=ctxts)
            messages.append(stage_message(sent[node], content))
        replies = self.exchange(messages, self.timeout, "train")
        return masked_answers(replies, next(iter(sent.values())).content.array_records[WEIGHTS])

    def aggregate(
        self, sent: Message, collected: dict[int, Message], total: Sums, sampled: int
    ) -> list[Message]:
        """Each survivor's reply, its update replaced by the survivors' weighted mean.

        The strategy's weighted average of equal adapters is that adapter, and its counts and
        checks (Flower's DP wrappers included) see one reply per site, as in a plain round.
        """
        metrics = [reply.content.metric_records["metrics"] for reply in collected.values()]
        total_weight = sum(number(m, "secagg-weight") for m in metrics)
        clip, sites = self.run.secagg_clip, len(collected)
        arrays = ArrayRecord({
            name: Array((array.numpy() + dequantize_sum(total[name], sites, clip) / total_weight)
                        .astype(array.numpy().dtype))
            for name, array in sent.content.array_records[WEIGHTS].items()
        })  # fmt: skip
        for reply, own in zip(collected.values(), metrics, strict=True):
            summary = {**own, "secagg-sites": sites, "secagg-dropped": sampled - sites}
            reply.content = RecordDict({WEIGHTS: arrays, "metrics": MetricRecord(summary)})
        return list(collected.values())


def number(metrics: MetricRecord, key: str) -> float:
    """One scalar metric of a site's reply."""
    value = metrics[key]
    if isinstance(value, list):
        raise SecureRoundFailed(f"secure round failed: metric {key} is a list")
    return float(value)


def stage_message(original: Message, content: RecordDict) -> Message:
    """A message of the round to the node `original` went to, with other content."""
    metadata = original.metadata
    return Message(content, metadata.dst_node_id, metadata.message_type, group_id=metadata.group_id)


def unmasked_sum(
    collected: dict[int, Message],
    shares: dict[int, ConfigRecord],
    dead: list[int],
    advertised: ConfigRecord,
) -> Sums:
    """The sum of the survivors' quantized updates: masks rebuilt from shares, taken off."""
    held: dict[int, list[bytes]] = {}
    for record in shares.values():
        for nid, share in zip(ints(record, "nids"), blobs(record, "shares"), strict=True):
            held.setdefault(nid, []).append(share)
    records = {node: reply.content.array_records[MASKED] for node, reply in collected.items()}
    shapes = {name: tuple(array.shape) for name, array in next(iter(records.values())).items()}
    total = {name: np.zeros(shape, dtype=np.int64) for name, shape in shapes.items()}
    for masked in records.values():
        for name in total:
            total[name] = (total[name] + masked[name].numpy().astype(np.int64)) % MODULUS
    if missing := [node for node in [*collected, *dead] if node not in held]:
        raise SecureRoundFailed(f"secure round failed: no shares came back for sites {missing}")
    offsets = [(-1, mask(combine_shares(held[node]), shapes)) for node in collected]
    nids, pk2s = ints(advertised, "nids"), blobs(advertised, "pk2s")
    for gone in dead:
        sk2 = bytes_to_private_key(combine_shares(held[gone]))
        for node in collected:
            seed = generate_shared_key(sk2, bytes_to_public_key(pk2s[nids.index(node)]))
            offsets.append((-pair_sign(node, gone), mask(seed, shapes)))
    for sign, values in offsets:
        for name in total:
            total[name] = (total[name] + sign * values[name]) % MODULUS
    return total

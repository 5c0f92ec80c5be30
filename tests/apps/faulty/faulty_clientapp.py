"""Test-only ClientApp: fedllm's real one, with faults injected on chosen nodes and rounds.

A node whose node config holds `faults="nan,scale"` trains honestly, then in round k applies
the k-th fault of that list (an empty item, or a round past the end of the list: none):

- `nan`: NaN in the first array of the reply and +Inf in the second,
- `scale`: the update (trained minus received) multiplied by 1000,
- `shape`: the first array with its last row dropped,
- `slow`: the honest reply, SLOW_SECONDS late,
- `hang`: no reply for HANG_SECONDS (a node stuck mid-round; in a secure round, after it
  shared its keys),
- `extra-array`: the honest reply plus an array record of token ids,
- `string-metric`: the honest reply plus a config record holding review text.

The faults are applied after fedllm's ClientApp (its egress guard included) has replied: this
node stands for one whose code was changed, which only the ServerApp's checks can catch.

Each fault is announced on stderr (the SuperNode's log) with the node id and round before it
takes effect, so a test can wait for it and match it to what the SuperLink did. Nodes without
`faults` behave exactly like fedllm's ClientApp. Replies must carry float32 weights
(update-dtype=float32), which the corruptions rewrite.
"""

import sys
import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from supernode.client_app import app as honest

SCALE = 1000.0
SLOW_SECONDS = 10.0
HANG_SECONDS = 3600.0

app = ClientApp()
LEAKS = {
    "extra-array": {"tokens": ArrayRecord({"input-ids": Array(np.arange(32, dtype=np.int64))})},
    "string-metric": {"review": ConfigRecord({"text": "a great film, says patient 42"})},
}


def corrupt(fault: str, trained: ArrayRecord, received: ArrayRecord) -> ArrayRecord:
    """The trained adapter with `fault` applied."""
    state = trained.to_torch_state_dict()
    first, second = list(state)[:2]
    if fault == "nan":
        state[first] = torch.full_like(state[first], float("nan"))
        state[second] = torch.full_like(state[second], float("inf"))
    elif fault == "scale":
        sent = received.to_torch_state_dict()
        state = {name: sent[name] + SCALE * (value - sent[name]) for name, value in state.items()}
    elif fault == "shape":
        state[first] = state[first][:-1].clone()
    else:
        raise ValueError(f"unknown fault {fault!r}")
    return ArrayRecord(state)


def fault_of(msg: Message, context: Context) -> tuple[int, str]:
    """(round, fault) for this training message on this node; '' for none."""
    faults = str(context.node_config.get("faults", "")).split(",")
    # A secure round's key stages carry no run config: only its training message has faults.
    config = msg.content.config_records.get("config", ConfigRecord())
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]
    fault = faults[server_round - 1].strip() if 0 < server_round <= len(faults) else ""
    return server_round, fault


def announce(context: Context, server_round: int, fault: str) -> None:
    print(
        f"faulty-clientapp: node {context.node_id} round {server_round}: {fault}",
        file=sys.stderr,
        flush=True,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train like fedllm's ClientApp; delay or corrupt the reply as the node config says."""
    server_round, fault = fault_of(msg, context)
    if fault in ("slow", "hang"):
        announce(context, server_round, fault)
        time.sleep(SLOW_SECONDS if fault == "slow" else HANG_SECONDS)
    reply = honest(msg, context)
    if fault in ("", "slow", "hang") or reply.has_error():
        return reply
    if fault in LEAKS:
        announce(context, server_round, fault)
        content = RecordDict({**dict(reply.content.items()), **LEAKS[fault]})
        return Message(content=content, reply_to=msg)
    if "arrays" not in reply.content.array_records:
        raise ValueError("faulty-clientapp corrupts float32 weights only: update-dtype=float32")
    received = msg.content.array_records["arrays"]
    arrays = corrupt(fault, reply.content.array_records["arrays"], received)
    announce(context, server_round, fault)
    return Message(
        content=RecordDict({**dict(reply.content.items()), "arrays": arrays}), reply_to=msg
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """fedllm's federated evaluation, unchanged."""
    return honest(msg, context)

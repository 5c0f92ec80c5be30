"""SecAgg+ in one process: the sites' mod and the server's round, with sites that drop out."""

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.serverapp.strategy import FedAvg

from fedllm.errors import FedllmError
from fedllm.privacy.egress import METRIC_KEYS, violations
from fedllm.privacy.secagg import (
    MASKED,
    check_secure_aggregation,
    ints,
    mask,
    quantization_bound,
    weight,
)
from fedllm.settings import RunSettings
from superlink.secure_round import SecureRound, SecureRoundFailed
from superlink.site_dp import site_level_dp
from supernode.secure_aggregation import secure_aggregation

pytestmark = pytest.mark.usefixtures("task_identity")
SHAPES = {"lora_A": (64, 48), "lora_B": (48, 64)}
START = {name: np.linspace(-1, 1, int(np.prod(s)), dtype=np.float32).reshape(s)
         for name, s in SHAPES.items()}  # fmt: skip
NODES = [11, 2**64 - 3, 7, 2**40 + 5]  # Flower's node ids are 64-bit


def test_masks_use_the_whole_secret() -> None:
    """Flower's generator folds a secret into 32 bits (XOR of its words); ours keeps all 256."""
    word = b"\x01" + bytes(3)
    first, second = bytes(32), bytes(4) + word + word + bytes(20)  # same fold, other secret
    ours = mask(first, SHAPES)["lora_A"], mask(second, SHAPES)["lora_A"]
    assert not np.array_equal(*ours)
    assert np.array_equal(mask(first, SHAPES)["lora_A"], ours[0])  # a seed gives one mask
    flower = [pseudo_rand_gen(secret, 1 << 32, [SHAPES["lora_A"]])[0] for secret in (first, second)]
    assert np.array_equal(*flower)  # the collision this module avoids


def update_of(node: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(node % 1000)
    return {name: rng.normal(0, 0.01, shape).astype(np.float32) for name, shape in SHAPES.items()}


class Sites:
    """Sites running the mod; `drop` maps a node to the stage it vanishes at."""

    def __init__(
        self,
        run: RunSettings,
        drop: dict[int, str] | None = None,
        tamper: Callable[[ConfigRecord], None] | None = None,
    ) -> None:
        config = {key.replace("_", "-"): value for key, value in run.model_dump().items()}
        config = {
            key: value for key, value in config.items() if isinstance(value, int | float | str)
        }
        self.contexts = {node: Context(1, node, {}, RecordDict(), config) for node in NODES}
        self.drop, self.tamper = drop or {}, tamper
        self.seen: list[Message] = []  # everything the server receives
        self.errors: list[str] = []  # sites' refusals

    def train(self, msg: Message, context: Context) -> Message:
        assert "secagg" not in msg.content.config_records  # the app sees the plain message
        node = msg.metadata.dst_node_id
        received = msg.content.array_records["arrays"]
        trained = {n: Array(a.numpy() + update_of(node)[n]) for n, a in received.items()}
        metrics = MetricRecord({"num-examples": 100 + node % 7, "train-loss": 0.5})
        return Message(
            RecordDict({"arrays": ArrayRecord(trained), "metrics": metrics}), reply_to=msg
        )

    def exchange(self, messages: list[Message], _timeout: float | None, name: str) -> list[Message]:
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if self.drop.get(node) and name.endswith(self.drop[node]):
                continue
            if self.tamper and name == "secagg-unmask":
                self.tamper(msg.content.config_records["secagg"])
            reply = secure_aggregation(msg, self.contexts[node], self.train)
            if reply.has_error():
                self.errors.append(reply.error.reason or "")
                continue
            assert violations(msg, reply, METRIC_KEYS) == []  # what the egress guard lets out
            reply.metadata.__dict__["_src_node_id"] = node  # as the SuperLink stamps it
            replies.append(reply)
        self.seen += replies
        return replies


def train_messages() -> list[Message]:
    content = RecordDict({"arrays": ArrayRecord({n: Array(a) for n, a in START.items()}),
                          "config": ConfigRecord({"server-round": 1})})  # fmt: skip
    return [Message(RecordDict(dict(content)), node, "train", group_id="1") for node in NODES]


def expected_mean(nodes: list[int], run: RunSettings) -> dict[str, np.ndarray]:
    weights = {n: weight(run, 100 + n % 7) for n in nodes}
    total = sum(weights.values())
    return {name: START[name] + sum(weights[n] * update_of(n)[name] for n in nodes) / total
            for name in SHAPES}  # fmt: skip


@pytest.mark.parametrize(
    ("weighting", "drop"),
    [("examples", {}), ("equal", {}), ("examples", {NODES[1]: "train"})],
)
def test_the_server_gets_the_weighted_mean_and_no_single_update(
    weighting: str, drop: dict[int, str]
) -> None:
    run = RunSettings(secure_aggregation="secaggplus", secagg_weighting=weighting)
    sites = Sites(run, drop)
    replies = SecureRound(run, sites.exchange, timeout=None).train(train_messages())
    reply = replies[0]
    assert sites.errors == []
    survivors = [node for node in NODES if node not in drop]
    metrics = reply.content.metric_records["metrics"]
    assert (metrics["secagg-sites"], metrics["secagg-dropped"]) == (len(survivors), len(drop))
    weights = [(100 + n % 7) / 1000 if weighting == "examples" else 1.0 for n in survivors]
    bound = quantization_bound(run.secagg_clip, len(survivors), sum(weights))
    got = reply.content.array_records["arrays"]
    for name, want in expected_mean(survivors, run).items():
        assert np.abs(got[name].numpy() - want).max() <= bound
    # The masked vectors the server saw are far from any site's quantized update.
    for seen in sites.seen:
        if MASKED in seen.content.array_records:
            values = seen.content.array_records[MASKED]["lora_A"].numpy()
            assert np.abs(values - (1 << 21)).mean() > 1e8  # uniform on [0, 2^32), not near 2^21


def test_too_many_dropouts_fail_the_round_in_one_line() -> None:
    run = RunSettings(secure_aggregation="secaggplus", secagg_threshold=3)
    sites = Sites(run, {NODES[0]: "train", NODES[2]: "train"})
    with pytest.raises(SecureRoundFailed, match="2 sites sent a masked update, the threshold is 3"):
        SecureRound(run, sites.exchange, timeout=None).train(train_messages())


def test_sites_refuse_to_unmask_a_survivor_twice() -> None:
    """A server listing a survivor as dropped too would learn its mask, hence its update."""
    run = RunSettings(secure_aggregation="secaggplus")
    sites = Sites(run, tamper=lambda config: config.update(dead=ints(config, "active")[:1]))
    with pytest.raises(SecureRoundFailed, match="0 sites sent unmasking shares"):
        SecureRound(run, sites.exchange, timeout=None).train(train_messages())
    assert len(sites.errors) == len(NODES)
    assert all("both as survivor and as dropped" in error for error in sites.errors)


def test_with_dp_client_the_sum_carries_the_planned_noise() -> None:
    """Each site adds noise*clip/sqrt(t) before masking: what the server unmasks is already
    noised, with the planned noise*clip on the sum when t sites survive (4 here: sqrt(4/3)x)."""
    run = RunSettings(secure_aggregation="secaggplus", dp="client", dp_noise=1.0, dp_clip=0.5,
                      secagg_threshold=3, min_nodes=4)  # fmt: skip
    [reply, *_] = SecureRound(run, Sites(run).exchange, timeout=None).train(train_messages())
    got = reply.content.array_records["arrays"]
    noise = np.concatenate([(got[n].numpy() - want).ravel()
                            for n, want in expected_mean(NODES, run).items()])  # fmt: skip
    sum_std = float(noise.std()) * len(NODES)  # the mean divides the sum by the 4 sites
    assert sum_std == pytest.approx(run.dp_noise * run.dp_clip * np.sqrt(4 / 3), rel=0.1)


def test_the_server_adds_no_noise_of_its_own_to_a_secure_sum() -> None:
    arrays = ArrayRecord({n: Array(a) for n, a in START.items()})
    for secure, moves in (("secaggplus", False), ("none", True)):
        run = RunSettings(dp="client", dp_noise=1.0, secure_aggregation=secure, min_nodes=4)
        strategy = site_level_dp(run, FedAvg())
        noised = strategy._add_noise_to_aggregated_arrays(ArrayRecord(dict(arrays)))
        changed = any(not np.array_equal(noised[n].numpy(), START[n]) for n in START)
        assert changed is moves


@pytest.mark.parametrize(
    ("values", "sites", "message"),
    [
        ({"strategy": "krum"}, None, "cannot be combined with strategy krum"),
        ({"dp": "server"}, None, "cannot be combined with dp=server"),
        ({"secagg_threshold": 5}, 4, "secagg-threshold 5 is above the 4 sites"),
        ({"secagg_threshold": 1}, None, "at least 2"),
    ],
)
def test_settings_it_cannot_honour_are_refused(
    values: dict, sites: int | None, message: str
) -> None:
    with pytest.raises(FedllmError, match=message):
        check_secure_aggregation(RunSettings(secure_aggregation="secaggplus", **values), sites)

"""Site-level DP (`dp=server|client`): Flower's fixed-clipping wrappers and RDP accountant.

Each round's aggregate of the sampled sites' clipped updates gets Gaussian noise of
`dp-noise * dp-clip / sites`; Flower's `RdpAccountant` composes the rounds and refuses a
round that would take ε past `dp-epsilon`. Its accounted mode holds only for Flower's plain
FedAvg with equal site weights and every sampled site replying, so that is what runs here:
each round samples exactly `min-nodes` sites, each site weighs 1 (`site-weight`), and
fedllm's update guard stays out (clipping bounds every update; Flower skips a round in which
a site fails). With a handful of sites this protects a site's whole contribution only at a
large ε: the noise is scaled to one site's share of an average over very few.
"""

from flwr.serverapp import RdpAccountant
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)
from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod

from fedllm.flower_internals.distributed_dp import NoisedAtSites
from fedllm.privacy.dp import default_delta
from fedllm.settings import RunSettings

# FedAvg samples max(int(connected * fraction), min-train-nodes): this makes it min-nodes.
EXACTLY_MIN_NODES = 1e-9
Wrapper = DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyClientSideFixedClipping


def site_level_dp(run: RunSettings, inner: FedAvg) -> Wrapper:
    """`inner` (plain FedAvg) inside Flower's DP wrapper for `run.dp`, with an accountant."""
    config = PrivacyConfig(
        target_delta=run.dp_delta or default_delta(run.min_nodes),
        population_size=run.min_nodes,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=run.dp_epsilon or None,
    )
    wrapper: type[Wrapper] = DifferentialPrivacyServerSideFixedClipping
    if run.dp == "client":
        secure = run.secure_aggregation != "none"  # the sites add the noise before masking
        wrapper = NoisedAtSites if secure else DifferentialPrivacyClientSideFixedClipping
    return wrapper(
        inner, run.dp_noise, run.dp_clip, run.min_nodes, accountant=RdpAccountant(config)
    )


def privacy_entry(strategy: object) -> dict[str, object]:
    """History form of what a site-level DP run has spent so far; empty for other runs."""
    spent = getattr(strategy, "privacy_spent", lambda: None)()
    if spent is None:
        return {}
    accountant = strategy.accountant  # type: ignore[attr-defined]
    return {
        "privacy": {"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases},
        "accountant": accountant.state_dict(),
    }


def restore_accountant(strategy: object, state: dict[str, object]) -> None:
    """Resume the accountant of a site-level DP run from a checkpoint's state."""
    saved = state.get("accountant")
    if isinstance(saved, dict) and getattr(strategy, "accountant", None) is not None:
        strategy.accountant.load_state_dict(saved)  # type: ignore[attr-defined]

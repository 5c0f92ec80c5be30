"""A site's decision for one training message: train privately, train plainly, or refuse.

The run proposes (`dp`, `dp-epsilon`, `dp-noise`, `dp-clip`); the site's policy and its
ledger decide. With `dp=sgd` the noise is the one that spends `dp-epsilon` over all the
run's rounds (or `dp-noise` when given), and the node refuses a round that would take the
run's ε past `dp-epsilon`, or the site's ε over all runs past the policy's `max-epsilon`.
"""

from dataclasses import dataclass

from fedllm.learning.model import pooling_of
from fedllm.learning.pooling import MEAN_POOLINGS
from fedllm.privacy.dp import default_delta
from fedllm.settings import NodeSettings, RunSettings
from supernode.dp_sgd import DpSgd, logical_batches, plan_noise
from supernode.privacy_ledger import PrivacyLedger, Release, epsilon
from supernode.site import Site, flower_home
from supernode.site_policy import SitePolicy, refusal

FEATURE_PASSES = 20.0  # bench/privacy.py: more passes buy little at ε 8 and cost at ε 1
TOLERANCE = 1e-3  # relative: opacus finds the noise for a budget to about this precision


class Refused(Exception):
    """The site will not train for this message; the reason goes back to the ServerApp."""


@dataclass(frozen=True)
class Spent:
    """(ε, δ) after this round: for the run, and for the site's records over all runs."""

    epsilon: float
    delta: float
    site_epsilon: float
    noise_multiplier: float

    def metrics(self) -> dict[str, float]:
        """Reply-metric form."""
        return {
            "dp-epsilon": self.epsilon,
            "dp-delta": self.delta,
            "dp-site-epsilon": self.site_epsilon,
            "dp-noise-multiplier": self.noise_multiplier,
        }


def ledger_of(node: NodeSettings) -> PrivacyLedger:
    """`privacy-ledger` from the node config, else one in the node's Flower home."""
    if node.privacy_ledger is not None:
        return PrivacyLedger(node.privacy_ledger.expanduser())
    return PrivacyLedger(flower_home() / "fedllm-privacy-ledger.json")


def private_passes(run: RunSettings) -> float:
    """`dp-epochs`, or by default 20 passes when only a mean-pooled head trains on pooled
    features (each a linear layer's cost), 1 when each step runs the model."""
    if run.dp_epochs:
        return run.dp_epochs
    on_features = run.dp_params == "head" and pooling_of(run) in MEAN_POOLINGS
    return FEATURE_PASSES if on_features else 1.0


def private_steps(run: RunSettings, batches_per_pass: int) -> int:
    """Noisy steps a node takes in one DP-SGD round: passes of logical batches."""
    return run.local_steps or max(1, round(private_passes(run) * batches_per_pass))


def plan_round(run: RunSettings, policy: SitePolicy, records: int) -> DpSgd | None:
    """This round's DP-SGD plan (None: plain training); raises `Refused`."""
    delta = run.dp_delta or default_delta(records)
    batch_size = max(1, min(run.dp_batch_size, records))
    batches_per_pass = logical_batches(records, batch_size)
    steps = private_steps(run, batches_per_pass)
    sample_rate = 1.0 / batches_per_pass  # opacus' Poisson rate for this loader
    noise = 0.0
    if run.dp == "sgd":
        total = steps * run.num_server_rounds
        noise = run.dp_noise or plan_noise(run.dp_epsilon, delta, sample_rate, total)
    reason = refusal(policy, run, noise, delta)
    if reason is not None:
        raise Refused(f"site policy: {reason}")
    if run.dp != "sgd":
        return None
    return DpSgd(noise, run.dp_clip, sample_rate, steps, batch_size, run.dp_lr, run.dp_params)


def spend(
    run: RunSettings,
    policy: SitePolicy,
    ledger: PrivacyLedger,
    run_id: int,
    server_round: int,
    plan: DpSgd,
    records: int,
) -> Spent:
    """Check the budgets for this round and record it in the ledger (before training)."""
    delta = run.dp_delta or default_delta(records)
    release = Release(run_id, server_round, plan.noise_multiplier, plan.sample_rate, plan.steps)
    run_epsilon = epsilon([*ledger.releases(run_id), release], delta)
    if run.dp_epsilon and run_epsilon > run.dp_epsilon * (1 + TOLERANCE):
        raise Refused(
            f"run budget spent: ε would reach {run_epsilon:.3g} > dp-epsilon {run.dp_epsilon:g}"
        )
    site_epsilon = epsilon([*ledger.releases(), release], delta)
    if policy.max_epsilon is not None and site_epsilon > policy.max_epsilon * (1 + TOLERANCE):
        raise Refused(
            f"site policy: ε for this site's records would reach {site_epsilon:.3g}"
            f" > max-epsilon {policy.max_epsilon:g}"
        )
    ledger.add(release)
    return Spent(run_epsilon, delta, site_epsilon, plan.noise_multiplier)


def privacy_for(
    site: Site, policy: SitePolicy, run_id: int, server_round: int
) -> tuple[DpSgd | None, Spent | None]:
    """The round's DP-SGD plan and its spend, recorded in the site's ledger; or `Refused`."""
    records = len(site.train)
    private = plan_round(site.run, policy, records)
    if private is None:
        return None, None
    ledger = ledger_of(site.node)
    return private, spend(site.run, policy, ledger, run_id, server_round, private, records)

"""Which differential-privacy settings make sense together, checked where a run is defined.

`dp=sgd` (record-level, opacus on each site) needs a budget `dp-epsilon` or a fixed
`dp-noise`. `dp=server|client` (site-level, Flower's fixed-clipping wrappers) needs
`dp-noise`, and is accounted with Flower's RDP accountant, which applies to FedAvg only.
"""

import math

from fedllm.errors import FedllmError
from fedllm.settings import RunSettings

ACCOUNTED_STRATEGIES = ("fedavg",)
# Error codes of replies a site sends instead of an update (Flower's own codes are below 100).
REFUSED = 4031  # the site's policy or privacy budget does not allow training for this run
BLOCKED = 4030  # the reply would have carried more than the site lets leave
# Site-level DP weighs every site the same: each reply carries this metric set to 1.
SITE_WEIGHT = "site-weight"


def check_privacy(run: RunSettings) -> None:
    """One-line error for a DP combination that cannot be applied or accounted."""
    if run.dp == "none":
        if run.dp_epsilon or run.dp_noise or run.dp_delta:
            raise FedllmError("dp-epsilon, dp-noise or dp-delta set while dp=none")
        return
    if run.dp == "sgd":
        if not (run.dp_epsilon or run.dp_noise):
            raise FedllmError("dp=sgd needs a budget dp-epsilon > 0 or a noise dp-noise > 0")
        if run.strategy == "fedprox":
            raise FedllmError(
                "dp=sgd cannot be combined with strategy fedprox: its proximal term is not"
                " clipped per example"
            )
        return
    if run.dp == "client" and run.update_dtype != "float32":
        raise FedllmError("dp=client clips float32 updates: set update-dtype float32")
    if run.dp_noise <= 0:
        raise FedllmError(f"dp={run.dp} needs dp-noise > 0 (noise multiplier of the aggregate)")
    if run.strategy not in ACCOUNTED_STRATEGIES:
        raise FedllmError(
            f"dp={run.dp} cannot be accounted with strategy {run.strategy}: Flower's RDP"
            " accountant applies to fedavg only"
        )


def default_delta(records: int) -> float:
    """δ below 1/records (the usual bound: less than the chance of exposing one record)."""
    return 1.0 / (10 * max(records, 1))


def site_noise(run: RunSettings, values: int) -> str:
    """One line comparing site-level DP's noise with what the sites can contribute; a
    `FedllmError` when the noise outweighs it (unless `dp-noise-check` is off).

    Flower adds noise of std `dp-noise * dp-clip / sites` to every value of the average of
    `sites` clipped updates, so the noise's norm is about `sqrt(values)` times that, while the
    average of the sites' updates has norm at most `dp-clip` (all of them pointing one way).
    """
    sites = run.min_nodes
    noise_norm = run.dp_noise * run.dp_clip * math.sqrt(values) / sites
    ratio = noise_norm / run.dp_clip
    line = (
        f"site-level DP: noise of norm {noise_norm:.3g} on the average of {sites} sites'"
        f" updates ({values:,} values), each clipped to {run.dp_clip:g}: the noise is"
        f" {ratio:.3g}x the largest aggregate the sites can send"
    )
    if ratio > 1 and run.dp_noise_check:
        raise FedllmError(
            f"{line}; it would swamp the aggregate: sample more sites, or set"
            " dp-noise-check=false to run anyway"
        )
    return line

"""Flower's client-side DP wrapper for distributed noise: the sites add it, the server does not.

With secure aggregation and `dp=client` each site adds its share of the Gaussian noise to its
clipped update before masking (`supernode.secure_aggregation`), so the server never holds an
un-noised aggregate. Flower 1.42's `DifferentialPrivacyClientSideFixedClipping` keeps
everything else this needs (clipping norm sent to the sites, uniform weights, one accounted
release per round with its `RdpAccountant`); only its private noise step must not run again.
"""

import inspect

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

from fedllm.flower_internals import require

NOISE_STEP = "_add_noise_to_aggregated_arrays"
step = getattr(DifferentialPrivacyClientSideFixedClipping, NOISE_STEP, None)
require(
    "distributed_dp",
    callable(step) and tuple(inspect.signature(step).parameters) == ("self", "aggregated_arrays"),
    f"DifferentialPrivacyClientSideFixedClipping.{NOISE_STEP}",
)


class NoisedAtSites(DifferentialPrivacyClientSideFixedClipping):
    """Client-side fixed clipping whose noise the sites already added to their updates."""

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        return aggregated_arrays  # the sum already carries the noise the accountant counts

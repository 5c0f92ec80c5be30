"""The site's privacy policy: a file the site mounts read-only, checked on every message.

The run's submitter chooses the run settings; the site decides what it accepts. A run that
asks for less privacy than the policy allows is refused before any training, whatever it says.

    # policy.toml
    require-dp = true            # only DP-SGD training (dp = "sgd")
    max-epsilon = 8.0            # ε for this site's records, all runs on this node together
    max-delta = 1e-5
    min-noise-multiplier = 0.5
    max-clip-norm = 1.0
    update-dtypes = ["float16", "bfloat16"]
    metrics = ["train-loss", "train-seconds"]   # scalar reply metrics that may leave
"""

import tomllib
from pathlib import Path

from flwr.app import MetricRecordValues
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedllm.errors import FedllmError
from fedllm.settings import RunSettings, UpdateDtype

# Always sent: aggregation weighs each update by it.
REQUIRED_METRICS = frozenset({"num-examples"})


class SitePolicy(BaseModel):
    """What this site accepts; unset fields do not restrict."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
    )

    require_dp: bool = Field(default=False, description="Only DP-SGD training (dp = sgd).")
    max_epsilon: float | None = Field(
        default=None, gt=0, description="Most ε this site's records spend, all runs together."
    )
    max_delta: float | None = Field(default=None, gt=0, lt=1, description="Largest δ accepted.")
    min_noise_multiplier: float | None = Field(
        default=None, ge=0, description="Smallest DP-SGD noise multiplier accepted."
    )
    max_clip_norm: float | None = Field(
        default=None, gt=0, description="Largest DP-SGD clipping norm accepted."
    )
    update_dtypes: tuple[UpdateDtype, ...] | None = Field(
        default=None, description="Update dtypes that may leave the site."
    )
    metrics: tuple[str, ...] | None = Field(
        default=None, description="Scalar reply metrics that may leave (num-examples always)."
    )


def load_policy(path: Path | None) -> SitePolicy:
    """The policy in `path` (TOML); no path: nothing restricted. Errors are one line."""
    if path is None:
        return SitePolicy()
    try:
        values = tomllib.loads(path.expanduser().read_text())
        return SitePolicy.model_validate(values)
    except OSError as err:
        raise FedllmError(f"site policy {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise FedllmError(f"site policy {path}: not TOML ({err})") from None
    except ValidationError as err:
        first = err.errors()[0]
        field = "-".join(str(part) for part in first["loc"]).replace("_", "-")
        raise FedllmError(f"site policy {path}: '{field}': {first['msg']}") from None


def refusal(policy: SitePolicy, run: RunSettings, noise: float, delta: float) -> str | None:
    """Why this site does not train for `run`, or None; `noise`/`delta`: the DP-SGD plan."""
    private = run.dp == "sgd"
    if policy.require_dp and not private:
        return f"site requires record-level DP (dp=sgd), run has dp={run.dp}"
    if policy.update_dtypes is not None and run.update_dtype not in policy.update_dtypes:
        return f"update-dtype {run.update_dtype} not in {list(policy.update_dtypes)}"
    if not private:
        return None
    if policy.max_clip_norm is not None and run.dp_clip > policy.max_clip_norm:
        return f"dp-clip {run.dp_clip:g} above the site's max-clip-norm {policy.max_clip_norm:g}"
    floor = policy.min_noise_multiplier
    if floor is not None and noise < floor:
        return f"noise multiplier {noise:.3g} below the site's min-noise-multiplier {floor:g}"
    if policy.max_delta is not None and delta > policy.max_delta:
        return f"dp-delta {delta:.3g} above the site's max-delta {policy.max_delta:g}"
    return None


def allowed_metrics(
    policy: SitePolicy, metrics: dict[str, MetricRecordValues]
) -> dict[str, MetricRecordValues]:
    """The reply metrics this site lets leave."""
    if policy.metrics is None:
        return metrics
    keep = REQUIRED_METRICS | set(policy.metrics)
    return {key: value for key, value in metrics.items() if key in keep}

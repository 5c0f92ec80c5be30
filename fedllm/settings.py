"""Typed settings per role: environment / `.env` merged with Flower run and node config."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedllm.errors import FedllmError

Strategy = Literal[
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "bulyan",
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# How nodes send their trained adapter: float32 weights, or a 16-bit delta
# (fedllm.learning.updates).
UpdateDtype = Literal["float32", "float16", "bfloat16"]
# Differential privacy: record-level DP-SGD on each site (opacus), or Flower's site-level
# wrappers with the noise added on the server or on the nodes (fedllm.privacy.dp).
DpMode = Literal["none", "sgd", "server", "client"]
# Which weights DP-SGD trains: the head alone, LoRA's B matrices (A stays at its shared random
# init, FFA-LoRA) and the head, or every adapter weight (supernode.dp_sgd).
DpParams = Literal["head", "lora-b", "lora"]


class RunSettings(BaseSettings):
    """One federated run: model, data, LoRA, local training and aggregation.

    The ServerApp and every ClientApp read these from the Flower run config; `fedllm up`
    builds them from `FEDLLM_*` variables, `.env` and its flags, and passes them as run config.
    """

    model_config = SettingsConfigDict(env_prefix="FEDLLM_", env_file=".env", extra="ignore")

    model: str = "gpt2"
    dataset: str = "stanfordnlp/imdb"
    strategy: Strategy = "fedavg"
    num_server_rounds: int = Field(3, ge=1)
    fraction_train: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, ge=0, le=1)
    min_nodes: int = Field(2, ge=1)
    round_timeout: float = Field(3600.0, gt=0)
    local_epochs: float = Field(1.0, ge=0)
    local_steps: int = Field(0, ge=0)
    lr: float = Field(1.5e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=8)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: str = ""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    partitioner: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(0.5, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    eval_max: int = Field(1000, ge=1)
    proximal_mu: float = Field(0.01, ge=0)
    server_lr: float = Field(0.0, ge=0)
    server_momentum: float = Field(0.9, ge=0, lt=1)
    trim_beta: float = Field(0.2, gt=0, lt=0.5)
    num_malicious: int = Field(0, ge=0)
    max_update_norm: float = Field(0.0, ge=0)
    update_dtype: UpdateDtype = "float32"
    dp: DpMode = "none"
    dp_epsilon: float = Field(0.0, ge=0)
    dp_delta: float = Field(0.0, ge=0, lt=1)
    dp_noise: float = Field(0.0, ge=0)
    dp_clip: float = Field(1.0, gt=0)
    dp_params: DpParams = "head"
    dp_batch_size: int = Field(256, ge=1)
    dp_lr: float = Field(4.0, gt=0)
    dp_epochs: float = Field(4.0, gt=0)
    dp_noise_check: bool = True
    keep_checkpoints: int = Field(3, ge=0)
    seed: int = 42
    run_dir: str = "runs/latest"
    resume: bool = False

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """Flower run-config form: dashed keys, scalar values."""
        return {key.replace("_", "-"): value for key, value in self.model_dump().items()}


class NodeSettings(BaseSettings):
    """One SuperNode's site: which data it holds and how it computes."""

    model_config = SettingsConfigDict(env_prefix="FEDLLM_NODE_", env_file=".env", extra="ignore")

    partition_id: int = Field(0, ge=0)
    num_partitions: int = Field(1, ge=1)
    data_path: Path | None = None
    threads: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantization: Literal["", "none", "4bit", "8bit"] = ""
    cache_dir: Path | None = None
    # The site's own privacy policy (supernode.site_policy), its privacy ledger, and a log
    # of what each reply carried out of the site (supernode.egress_guard).
    privacy_policy: Path | None = None
    privacy_ledger: Path | None = None
    egress_log: Path | None = None
    # Micro-batches fitted to free memory and adapted to out-of-memory and pressure
    # (supernode.microbatch, supernode.adaptation); the effective batch stays `batch-size`.
    adapt_memory: bool = True
    memory_margin: float = Field(0.2, ge=0, lt=1)
    memory_pressure: float = Field(0.1, gt=0, le=1)
    memory_calm_steps: int = Field(8, ge=1)


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def from_flower_config(cls: type[SettingsT], config: Mapping[str, Any]) -> SettingsT:
    """Build settings from a Flower config (dashed keys); fail with one line naming the field."""
    values = {key.replace("-", "_"): value for key, value in config.items()}
    values = {key: value for key, value in values.items() if key in cls.model_fields}
    return build(cls, **values)


def build(cls: type[SettingsT], **values: Any) -> SettingsT:
    """Instantiate settings, turning a validation error into a one-line `FedllmError`."""
    try:
        return cls(**values)
    except ValidationError as err:
        raise FedllmError(describe(err)) from None


def describe(err: ValidationError) -> str:
    """The first validation problem as `invalid setting 'name': reason (got value)`."""
    first = err.errors()[0]
    field = "-".join(str(part) for part in first["loc"]).replace("_", "-")
    return f"invalid setting '{field}': {first['msg']} (got {first.get('input')!r})"

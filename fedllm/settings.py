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
# What the classification head reads: the architecture's own token (BERT's [CLS], GPT-2's last
# token), the mean of the last layer's token states, of every layer's, or every layer's side by
# side (fedllm.learning.pooling); auto: stack with DP-SGD, else model.
Pooling = Literal["auto", "model", "mean", "layers", "stack"]


class RunSettings(BaseSettings):
    """One federated run: model, data, LoRA, local training and aggregation.

    The ServerApp and every ClientApp read these from the Flower run config; `fedllm up`
    builds them from `FEDLLM_*` variables, `.env` and its flags, and passes them as run config.
    """

    model_config = SettingsConfigDict(env_prefix="FEDLLM_", env_file=".env", extra="ignore")

    model: str = Field(
        "gpt2",
        description="Hub id or local directory of a model with a sequence-classification head.",
    )
    dataset: str = Field(
        "stanfordnlp/imdb",
        description="Hub id, or a local parquet/csv/jsonl file with `text` and `label` columns.",
    )
    strategy: Strategy = Field(
        "fedavg", description="Aggregation strategy (Flower's `flwr.serverapp.strategy`)."
    )
    num_server_rounds: int = Field(3, ge=1, description="Federated rounds.")
    fraction_train: float = Field(
        1.0, gt=0, le=1, description="Share of connected nodes sampled to train each round."
    )
    fraction_evaluate: float = Field(
        1.0, ge=0, le=1, description="Share of connected nodes sampled to evaluate each round."
    )
    min_nodes: int = Field(2, ge=1, description="Nodes connected before a round starts.")
    round_timeout: float = Field(3600.0, gt=0, description="Seconds a round waits for replies.")
    local_epochs: float = Field(
        1.0, ge=0, description="Passes over a node's records per round (unless local-steps)."
    )
    local_steps: int = Field(
        0, ge=0, description="Optimizer steps per round; > 0 wins over local-epochs."
    )
    lr: float = Field(
        1.5e-3,
        gt=0,
        description="A node's AdamW learning rate (FedAvg needs ~3x the centralized one).",
    )
    batch_size: int = Field(16, ge=1, description="Reviews per optimizer step.")
    max_length: int = Field(256, ge=8, description="Tokens kept per review.")
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on LoRA's input.")
    lora_targets: str = Field(
        "",
        description="Comma list of modules LoRA wraps; empty: peft's usual ones for the model.",
    )
    pooling: Pooling = Field(
        "auto",
        description="What the head reads: model (its own token), mean (of the last layer's "
        "token states), layers (of every layer's), stack (each layer's mean side by side, "
        "normalised); auto: stack with dp=sgd, else model.",
    )
    review_windows: int = Field(
        0,
        ge=0,
        description="Windows of max-length tokens read per review by a token-mean pooling, "
        "each encoded alone, their tokens averaged together; 0: 4 when DP-SGD trains the head "
        "on frozen features (the encoder runs once per review), else 1.",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="bitsandbytes base weights, CUDA hosts only."
    )
    partitioner: Literal["iid", "dirichlet"] = Field(
        "iid", description="How the dataset is split across nodes (flwr-datasets)."
    )
    dirichlet_alpha: float = Field(
        0.5, gt=0, description="Label skew of the dirichlet split (smaller: more skewed)."
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of a node's records kept for its own evaluation."
    )
    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of a local dataset held out for server evaluation."
    )
    eval_max: int = Field(1000, ge=1, description="Most reviews the server evaluates on.")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx's proximal term weight.")
    logit_adjustment: float = Field(
        1.0,
        ge=0,
        description="Train on logits plus this times the log of the site's label frequencies "
        "(label skew); 0: plain cross entropy.",
    )
    server_lr: float = Field(
        0.0,
        ge=0,
        description="Server learning rate (FedAdam/FedYogi/FedAdagrad/FedAvgM); 0: Flower's.",
    )
    server_momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM's momentum.")
    trim_beta: float = Field(
        0.2, gt=0, lt=0.5, description="FedTrimmedAvg: share cut from each end."
    )
    num_malicious: int = Field(0, ge=0, description="Krum/Bulyan: malicious nodes to tolerate.")
    max_update_norm: float = Field(
        0.0,
        ge=0,
        description="Reject an update farther than this (L2) from the global adapter; 0: none.",
    )
    update_dtype: UpdateDtype = Field(
        "float32", description="Dtype of node updates on the wire (16-bit: a delta, half size)."
    )
    dp: DpMode = Field(
        "none",
        description="Differential privacy: sgd (record-level, each site), server or client "
        "(site-level noise added by the server or the nodes).",
    )
    dp_epsilon: float = Field(
        0.0, ge=0, description="ε budget for the whole run (sgd: per site); 0: none."
    )
    dp_delta: float = Field(
        0.0, ge=0, lt=1, description="δ; 0: 1/(10·records) per site (sgd), 1/(10·sites)."
    )
    dp_noise: float = Field(
        0.0,
        ge=0,
        description="Noise multiplier (sgd: overrides the budget's; server/client: required).",
    )
    dp_clip: float = Field(
        1.0, gt=0, description="Clipping norm: per example (sgd), per site update otherwise."
    )
    dp_params: DpParams = Field(
        "head", description="What DP-SGD trains: the head, LoRA's B and the head, or all LoRA."
    )
    dp_batch_size: int = Field(
        1024, ge=1, description="DP-SGD's logical (Poisson) batch, run in micro-batches."
    )
    dp_lr: float = Field(2.0, gt=0, description="DP-SGD's SGD-with-momentum learning rate.")
    dp_epochs: float = Field(
        0.0,
        ge=0,
        description="DP-SGD's passes over a site's records per round; 0: 20 over pooled "
        "features (head on a token-mean pooling), else 1 through the model.",
    )
    dp_noise_check: bool = Field(
        True,
        description="server/client: refuse a run whose noise outweighs the largest aggregate.",
    )
    secure_aggregation: Literal["none", "secaggplus"] = Field(
        "none", description="secaggplus: the server sees only the sum of the sites' updates."
    )
    secagg_threshold: int = Field(
        0, ge=0, description="Sites needed to unmask a round; 0: 2/3 of those sampled (min 2)."
    )
    secagg_clip: float = Field(
        8.0, gt=0, description="Weighted update values are clipped to ±this, then quantized."
    )
    secagg_timeout: float = Field(
        60.0, gt=0, description="Seconds each key stage of a secure round waits for sites."
    )
    secagg_weighting: Literal["examples", "equal"] = Field(
        "examples", description="Weigh each site's update by its examples, or all equally."
    )
    secagg_failure: Literal["continue", "stop"] = Field(
        "continue",
        description="A secure round below the threshold: keep the adapter and go on, or stop.",
    )
    keep_checkpoints: int = Field(
        3, ge=0, description="Newest checkpoints kept (the best always is); 0: all."
    )
    seed: int = Field(42, description="Seed for model initialisation, sampling and splits.")
    run_dir: str = Field("runs/latest", description="Where the run writes its results.")
    resume: bool = Field(False, description="Continue the run in run-dir from its checkpoint.")

    def to_run_config(self) -> dict[str, str | int | float | bool]:
        """Flower run-config form: dashed keys, scalar values."""
        return {key.replace("_", "-"): value for key, value in self.model_dump().items()}


class NodeSettings(BaseSettings):
    """One SuperNode's site: which data it holds and how it computes."""

    model_config = SettingsConfigDict(env_prefix="FEDLLM_NODE_", env_file=".env", extra="ignore")

    partition_id: int = Field(0, ge=0, description="This node's partition of the dataset.")
    num_partitions: int = Field(1, ge=1, description="Partitions the dataset is split into.")
    data_path: Path | None = Field(
        None, description="The site's own data file (overrides partitioning)."
    )
    threads: int = Field(
        0, ge=0, description="torch threads; 0: the node's CPUs (affinity, cgroup quota)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs; auto: CUDA when visible."
    )
    quantization: Literal["", "none", "4bit", "8bit"] = Field(
        "", description="A CUDA site's base-weight quantization; empty: the run's."
    )
    cache_dir: Path | None = Field(
        None, description="Tokenized reviews' cache; none: fedllm-cache in the Flower home."
    )
    privacy_policy: Path | None = Field(
        None, description="The site's privacy policy file (TOML); none: no restriction."
    )
    privacy_ledger: Path | None = Field(
        None, description="Where the site records the ε its runs spent."
    )
    egress_log: Path | None = Field(
        None, description="Log of what each reply carried out of the site."
    )
    adapt_memory: bool = Field(
        True,
        description="Fit micro-batches to free memory and adapt to pressure (same effective "
        "batch).",
    )
    memory_margin: float = Field(
        0.2, ge=0, lt=1, description="Share of free memory left unused when sizing batches."
    )
    memory_pressure: float = Field(
        0.1, gt=0, le=1, description="PSI pressure (some avg10) that halves the micro-batch."
    )
    memory_calm_steps: int = Field(
        8, ge=1, description="Calm steps before a halved micro-batch grows again."
    )


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

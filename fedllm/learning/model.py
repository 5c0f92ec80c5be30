"""The classifier every role builds: a pretrained LM with a 2-label head, wrapped by LoRA."""

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fedllm.errors import FedllmError
from fedllm.learning.data import hub_hint
from fedllm.learning.pooling import MEAN_POOLINGS, MeanPooledClassifier
from fedllm.settings import RunSettings

NUM_LABELS = 2
# Windows a review under DP-SGD on frozen features: 4 x 128 tokens lifted the linear ceiling
# from 0.80 to 0.86 on real reviews (docs/benchmarks.md).
DP_WINDOWS = 4


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (GPT-2 has none: reuse end-of-text)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise FedllmError(hub_hint(f"tokenizer {name!r}", "--model", err)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present and not refused, else CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise FedllmError("invalid setting 'device': cuda requested but no CUDA GPU is visible")
    use_cuda = preference != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def quantization_config(mode: str, device: torch.device) -> BitsAndBytesConfig | None:
    """bitsandbytes 4/8-bit base weights, only on CUDA hosts."""
    if mode in ("", "none"):
        return None
    if device.type != "cuda":
        raise FedllmError(
            f"invalid setting 'quantization': {mode} needs a CUDA GPU; use 'none' on CPU hosts"
        )
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def pooling_of(run: RunSettings) -> str:
    """The run's pooling with `auto` resolved: every layer's token mean, side by side, under
    DP-SGD."""
    if run.pooling == "auto":
        return "stack" if run.dp == "sgd" else "model"
    return run.pooling


def windows_of(run: RunSettings) -> int:
    """Windows of `max-length` tokens read per review (`review-windows`, 0 resolved): 4 when
    DP-SGD trains only the head on a token-mean pooling, whose frozen encoder runs once per
    review: reading more of it lifts a linear head's ceiling (docs/privacy.md); else 1."""
    if run.review_windows:
        return run.review_windows
    on_features = run.dp == "sgd" and run.dp_params == "head" and pooling_of(run) in MEAN_POOLINGS
    return DP_WINDOWS if on_features else 1


def tokens_read(run: RunSettings) -> int:
    """Tokens kept per review: `max-length` times its windows."""
    return run.max_length * windows_of(run)


def window_of(run: RunSettings) -> int:
    """The encoder's window for a mean-pooled model: `max-length` when reading several, else 0
    (one pass however long the review)."""
    return run.max_length if windows_of(run) > 1 else 0


def load_base(
    name: str,
    pad_token_id: int,
    quantization: BitsAndBytesConfig | None = None,
    pooling: str = "model",
    window: int = 0,
) -> PreTrainedModel | MeanPooledClassifier:
    """The pretrained model with a freshly initialised 2-label classification head: the
    architecture's own, or a linear one on the mean of the token states (`pooling` one of
    `MEAN_POOLINGS`, read in windows of `window` tokens when set)."""
    kwargs: dict[str, object] = {}
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": 0})
    try:
        if pooling in MEAN_POOLINGS:
            backbone = AutoModel.from_pretrained(name, **kwargs)
            backbone.config.pad_token_id = pad_token_id
            return MeanPooledClassifier(backbone, NUM_LABELS, pooling, window)
        base = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=NUM_LABELS, **kwargs
        )
    except (OSError, ValueError) as err:
        raise FedllmError(hub_hint(f"model {name!r}", "--model", err)) from None
    base.config.pad_token_id = pad_token_id
    return base


def lora_config(run: RunSettings) -> LoraConfig:
    """LoRA on the configured modules; peft picks the architecture's usual ones when unset."""
    targets = [name.strip() for name in run.lora_targets.split(",") if name.strip()]
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=run.lora_r,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.lora_dropout,
        target_modules=targets or None,
    )


def build_model(
    run: RunSettings,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    quantization: str = "",
) -> PeftModel:
    """Base model + LoRA adapter; only adapter and head weights are trainable."""
    torch.manual_seed(run.seed)
    bnb = quantization_config(quantization or run.quantization, device)
    pad = int(tokenizer.pad_token_id)
    base: nn.Module = load_base(run.model, pad, bnb, pooling_of(run), window_of(run))
    if bnb is not None and isinstance(base, MeanPooledClassifier):
        base.backbone = prepare_model_for_kbit_training(base.backbone)  # peft's checks read it
    elif bnb is not None:
        base = prepare_model_for_kbit_training(base)
    try:
        model = get_peft_model(base, lora_config(run))
    except ValueError as err:
        raise FedllmError(
            f"cannot place LoRA on {run.model!r} ({str(err).splitlines()[0][:120]}); "
            "set lora-targets to its attention projection names"
        ) from None
    if bnb is None:
        model.to(device)
    assert isinstance(model, PeftModel)
    return model

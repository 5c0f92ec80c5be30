"""LoRA training speed and GPU memory on CUDA: bf16/fp32 base weights vs bitsandbytes 4/8-bit.

Prints one JSON object. Each variant runs in its own process through the project's own code
(`fedllm.learning.model.build_model` with `RunSettings.quantization`,
`fedllm.learning.batches`, `supernode.train.train`, `fedllm.learning.evaluate.evaluate`) on real
IMDB reviews: a warm-up of a few steps, then one timed pass over the training reviews
(examples/s, tokens/s, peak GPU memory), then the held-out reviews.

The model has GPT-2 124M's shapes (`GPT2Config()` defaults) with random weights: no hub is
reachable where this runs. Speed and memory do not depend on the weight values; accuracy does,
so the accuracy here means nothing. The tokenizer is a byte-level BPE trained offline on IMDB
reviews (GPT-2's own is not available offline), kept at GPT-2's vocabulary size in the model.

    python bench/gpu.py prepare --data ../shared/data/imdb/train.parquet --assets .gpu
    python bench/gpu.py run --assets .gpu --out bench/gpu.json     # on a CUDA machine
"""

import argparse
import datetime
import gc
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
EOS = "<|endoftext|>"
GPT2_VOCAB = 50257
# name -> (RunSettings.quantization, dtype of the saved base weights)
VARIANTS = {
    "bf16": ("none", "bfloat16"),
    "4bit": ("4bit", "bfloat16"),
    "fp32": ("none", "float32"),
    "8bit": ("8bit", "bfloat16"),
}
WEIGHTS = "random init, GPT-2 124M shapes"


def now() -> str:
    """UTC time, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str:
    """HEAD, marked `-dirty` when the code this benchmark runs differs from it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    paths = ["bench/gpu.py", "fedllm", "supernode", "pyproject.toml"]
    status = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


# --- prepare (here, no GPU): reviews, tokenizer, provenance --------------------------------


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2's scheme) trained on `texts`, end-of-text as its only special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Sample reviews and train the tokenizer into `args.assets`; return what was written."""
    import pandas as pd

    assets = Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    table = pd.read_parquet(args.data, columns=["text", "label"])
    sample = table.sample(n=args.reviews, random_state=args.seed).reset_index(drop=True)
    sample.to_parquet(assets / "reviews.parquet", index=False)
    tokenizer = train_tokenizer(table["text"].tolist(), GPT2_VOCAB)
    tokenizer.save_pretrained(assets / "tokenizer")
    meta = {
        "prepared": now(),
        "commit": git_commit(),
        "source": str(Path(args.data)),
        "source_reviews": len(table),
        "reviews": len(sample),
        "positive_fraction": float(sample["label"].mean()),
        "tokenizer": f"byte-level BPE trained on the {len(table)} reviews of the source file, "
        f"vocabulary {len(tokenizer)} (GPT-2's own tokenizer is not available offline)",
    }
    (assets / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --- run (on the GPU machine): one process per variant --------------------------------------


def write_base(target: Path, tokenizer_dir: Path, dtype: str, layers: int, seed: int) -> Path:
    """Save a randomly initialised GPT-2 (124M shapes unless `layers` is changed) and tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = int(tokenizer.eos_token_id)
    config = GPT2Config(n_layer=layers, vocab_size=max(GPT2_VOCAB, len(tokenizer)),
                        bos_token_id=eos, eos_token_id=eos)  # fmt: skip
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).to(getattr(torch, dtype))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def flower_types() -> str:
    """Import `flwr.app`, or stand in for it where Flower is not installed.

    `supernode.train` and `fedllm.learning.evaluate` take only the `MetricRecordValues` type alias
    from it, for annotations; the training and evaluation code is the same either way.
    """
    try:
        import flwr.app  # noqa: F401

        return f"flwr {version('flwr')}"
    except ImportError:
        app = types.ModuleType("flwr.app")
        app.MetricRecordValues = Any  # type: ignore[attr-defined]
        package = types.ModuleType("flwr")
        package.app = app  # type: ignore[attr-defined]
        sys.modules.update({"flwr": package, "flwr.app": app})
        return "not installed: a stub flwr.app gives the MetricRecordValues annotation alias"


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant: build, warm up, one timed pass, held-out evaluation."""
    flower = flower_types()
    import pandas as pd
    import torch

    from fedllm.learning.batches import batches, encode
    from fedllm.learning.evaluate import evaluate
    from fedllm.learning.model import build_model, load_tokenizer, pick_device
    from fedllm.settings import RunSettings, build
    from supernode.train import train

    device = pick_device("auto")
    cuda = device.type == "cuda"
    run = build(
        RunSettings,
        model=spec["model"],
        quantization=spec["quantization"],
        batch_size=spec["batch_size"],
        max_length=spec["max_length"],
        lora_r=spec["lora_r"],
        seed=spec["seed"],
    )
    tokenizer = load_tokenizer(run.model)
    pad = int(tokenizer.pad_token_id)
    table = pd.read_parquet(spec["data"])
    held_out = spec["eval_reviews"]
    train_rows, eval_rows = table.iloc[:-held_out], table.iloc[-held_out:]
    train_set = encode(train_rows["text"].tolist(), train_rows["label"].tolist(),
                       tokenizer, run.max_length)  # fmt: skip
    eval_set = encode(eval_rows["text"].tolist(), eval_rows["label"].tolist(),
                      tokenizer, run.max_length)  # fmt: skip
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = build_model(run, tokenizer, device)
    load_seconds = time.perf_counter() - started
    after_load = torch.cuda.memory_allocated() if cuda else 0
    quantized = sum(
        type(module).__name__ in ("Linear4bit", "Linear8bitLt") for module in model.modules()
    )
    trainable, total = model.get_nb_trainable_parameters()
    targets = sorted(getattr(model.peft_config["default"], "target_modules", None) or [])
    base_dtypes = sorted({str(p.dtype) for p in model.parameters() if not p.requires_grad})
    loader = batches(train_set, pad, run.batch_size, True, run.seed)
    warm = train(model, loader, device, run.lr, 0.0, max_steps=spec["warmup_steps"])
    if cuda:
        torch.cuda.synchronize()
        warm_peak = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        torch.cuda.reset_peak_memory_stats()
    timed = train(model, loader, device, run.lr, spec["epochs"])
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    started = time.perf_counter()
    scores = evaluate(model, batches(eval_set, pad, run.batch_size, False), device)
    eval_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "variant": spec["variant"],
        "quantization": run.quantization,
        "saved_weights_dtype": spec["dtype"],
        "frozen_param_dtypes": base_dtypes,
        "quantized_linear_layers": quantized,
        "lora_targets": targets,
        "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
        "batch_size": run.batch_size,
        "trainable_params": trainable,
        "all_params": total,
        "load_seconds": load_seconds,
        "warmup_steps": warm.steps,
        "timed_steps": timed.steps,
        "timed_examples": timed.examples,
        "timed_seconds": timed.seconds,
        "examples_per_second": timed.examples / timed.seconds,
        "tokens_per_second": timed.tokens / timed.seconds,
        "mean_tokens_per_example": timed.tokens / max(timed.examples, 1),
        "train_loss": timed.loss,
        "eval_examples_per_second": len(eval_set) / eval_seconds,
        "eval_accuracy_not_meaningful": scores["accuracy"],
        "flwr": flower,
        "device": str(device),
    }
    if cuda:
        result |= {
            "gpu_allocated_after_load_mib": after_load / MIB,
            "gpu_peak_allocated_load_warmup_mib": warm_peak[0] / MIB,
            "gpu_peak_reserved_load_warmup_mib": warm_peak[1] / MIB,
            "gpu_peak_allocated_mib": peak[0] / MIB,
            "gpu_peak_reserved_mib": peak[1] / MIB,
        }
    del model
    gc.collect()
    return result


def environment() -> dict[str, Any]:
    """GPU, driver and package versions of this machine."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        **{name: version(name) for name in ("transformers", "peft", "accelerate", "bitsandbytes",
                                            "tokenizers", "pydantic-settings", "flwr")},
    }  # fmt: skip
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": torch.cuda.get_device_name(0),
            "gpu_memory_mib": props.total_memory / MIB,
            "gpu_multiprocessors": props.multi_processor_count,
        }
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["driver"] = smi.stdout.strip() or None
    else:
        info["gpu"] = None
    return info


def run_variants(args: argparse.Namespace) -> dict[str, Any]:
    """Every batch size x variant in its own process, within the time budget."""
    from fedllm.settings import RunSettings

    defaults = RunSettings.model_fields
    assets = Path(args.assets)
    meta = json.loads((assets / "meta.json").read_text())
    work = Path(args.work or tempfile.mkdtemp(prefix="fedllm-gpu-"))
    started = time.monotonic()
    out: dict[str, Any] = {
        "what": "LoRA training speed and GPU memory per quantization of the base weights, "
        "through fedllm's build_model / batches / supernode.train.train",
        "date": now(),
        "commit": meta["commit"],
        **environment(),
        "weights": f"{WEIGHTS}: transformers GPT2Config() defaults ({args.layers} layers, "
        f"768 wide, 12 heads, vocabulary {GPT2_VOCAB}), generated on the machine that ran this; "
        "speed and memory do not depend on the values, accuracy does (not meaningful here)",
        "tokenizer": meta["tokenizer"],
        "data": f"{meta['reviews']} IMDB train reviews sampled from {meta['source']} "
        f"(seed {args.seed}): the last {args.eval_reviews} held out",
        "settings": {
            "max_length": args.max_length,
            "lora_r": args.lora_r,
            "lora_alpha": defaults["lora_alpha"].default,
            "lora_dropout": defaults["lora_dropout"].default,
            "lr": defaults["lr"].default,
            "optimizer": "AdamW (supernode.train)",
            "warmup_steps": args.warmup_steps,
            "timed_epochs": args.epochs,
            "batch_sizes": args.batch_sizes,
            "variants": args.variants,
        },
        "variants_meaning": {
            "bf16": "quantization=none on bf16 saved weights (transformers 5 loads dtype auto)",
            "fp32": "quantization=none on fp32 saved weights: today's path for the hub GPT-2",
            "4bit": "quantization=4bit: bitsandbytes NF4, double quant, bf16 compute",
            "8bit": "quantization=8bit: bitsandbytes LLM.int8",
        },
        "runs": [],
    }
    bases: dict[str, Path] = {}
    for variant in args.variants:  # in priority order: the last are skipped when time runs short
        for batch_size in args.batch_sizes:
            quantization, dtype = VARIANTS[variant]
            left = args.budget_s - (time.monotonic() - started)
            if left < 20:
                out["runs"].append({"variant": variant, "batch_size": batch_size,
                                    "skipped": "time budget spent"})  # fmt: skip
                continue
            if dtype not in bases:
                bases[dtype] = write_base(work / f"gpt2-{dtype}", assets / "tokenizer", dtype,
                                          args.layers, args.seed)  # fmt: skip
            spec = {"variant": variant, "quantization": quantization, "dtype": dtype,
                    "model": str(bases[dtype]), "data": str(assets / "reviews.parquet"),
                    "batch_size": batch_size, "max_length": args.max_length,
                    "lora_r": args.lora_r, "seed": args.seed, "eval_reviews": args.eval_reviews,
                    "warmup_steps": args.warmup_steps, "epochs": args.epochs}  # fmt: skip
            out["runs"].append(one_child(spec, work, min(left, args.child_timeout_s)))
            print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    out["wall_seconds"] = time.monotonic() - started
    return out


def one_child(spec: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """Run `child` in a fresh process (clean CUDA memory statistics, a crash stays contained)."""
    name = f"{spec['variant']}-bs{spec['batch_size']}"
    spec_file, result_file = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec_file.write_text(json.dumps(spec | {"result": str(result_file)}))
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "child", str(spec_file)],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"variant": spec["variant"], "batch_size": spec["batch_size"],
                "error": f"timed out after {timeout:.0f} s"}  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"variant": spec["variant"], "batch_size": spec["batch_size"],
                "error": f"exit {proc.returncode}: " + " | ".join(tail)}  # fmt: skip
    return json.loads(result_file.read_text()) | {"process_wall_seconds": wall}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="sample reviews and train the tokenizer (no GPU)")
    prep.add_argument("--data", default=str(ROOT.parent / "shared/data/imdb/train.parquet"))
    prep.add_argument("--assets", default=str(ROOT / ".gpu"))
    prep.add_argument("--reviews", type=int, default=3000)
    prep.add_argument("--seed", type=int, default=42)
    run = sub.add_parser("run", help="train each variant on CUDA and print the figures")
    run.add_argument("--assets", default=str(ROOT / ".gpu"))
    run.add_argument("--work", default="", help="folder for the generated models (default: temp)")
    run.add_argument("--out", default="")
    run.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    run.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")],
                     default=[16, 64])  # fmt: skip
    run.add_argument("--max-length", type=int, default=256)
    run.add_argument("--lora-r", type=int, default=8)
    run.add_argument("--layers", type=int, default=12, help="fewer only for a quick CPU check")
    run.add_argument("--eval-reviews", type=int, default=500)
    run.add_argument("--warmup-steps", type=int, default=10)
    run.add_argument("--epochs", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--budget-s", type=float, default=300.0, help="skip variants after this")
    run.add_argument("--child-timeout-s", type=float, default=150.0)
    one = sub.add_parser("child", help=argparse.SUPPRESS)
    one.add_argument("spec")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.command == "child":
        spec = json.loads(Path(args.spec).read_text())
        Path(spec["result"]).write_text(json.dumps(child(spec)))
        return
    result = prepare(args) if args.command == "prepare" else run_variants(args)
    text = json.dumps(result, indent=2)
    if getattr(args, "out", ""):
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

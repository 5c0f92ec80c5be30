"""Choose the DP-SGD recipe on frozen features: which pooling, and how to train the head.

With `dp-params=head` the encoder is frozen for the whole run, so a site's DP-SGD only ever sees
each review's pooled vector. This bench computes those vectors once (MiniLM, real IMDB reviews,
the project's `MeanPooledClassifier`) for four poolings: BERT's `[CLS]` through its pooler (what
`pooling=model` reads), the last layer's token mean (`mean`), the token mean averaged over every
layer (`layers`), every layer's token mean side by side at one norm (`stack`). Then, for each,
FedAvg over `--sites` sites of a linear head trained with the project's DP-SGD
(`supernode.dp_sgd.make_private`: Poisson batches, per-example clipping, noise for ε over all
rounds at δ = 1/(10 records)), several recipes on the default pooling, `--seeds` seeds (which
reviews each site holds), held-out reviews the training never saw, and the ceiling of a head on
these features: logistic regression without DP. `--privacy-split` takes the reviews and held-out
split of `bench/privacy.py`'s federations of the same seeds, so both read alike. Prints JSON.

    python bench/dp_features.py --out bench/dp-features.json
    python bench/dp_features.py --max-length 128 --big-records 0 --out bench/dp-features-128.json
    python bench/dp_features.py --privacy-split --max-length 128 --windows 4 --big-records 0 \
        --out bench/dp-features-privacy-split-windows.json
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import minilm_path, publish, write_reviews

from fedllm.learning.batches import PadBatch, encode
from fedllm.learning.data import read_table, split_holdout
from fedllm.learning.model import load_base, load_tokenizer
from fedllm.learning.pooling import MeanPooledClassifier, mean_of_tokens, stacked_means
from fedllm.learning.pooling import windows as cut_windows
from supernode.dp_sgd import DpSgd, make_private, plan_noise

POOLINGS = ("cls", "mean", "layers", "stack")
DEFAULT = "stack"  # what `pooling` auto reads under DP-SGD: the levers are tried on it


@torch.no_grad()
def pooled(
    texts: list[str], labels: list[int], max_length: int, windows: int
) -> dict[str, torch.Tensor]:
    """Every pooling's vector for each review, from one forward pass each, over its first
    `windows` windows of `max_length` tokens (as `review-windows` reads them; `cls`: the
    pooler's output averaged over the windows)."""
    tokenizer = load_tokenizer(minilm_path())
    model = load_base(minilm_path(), int(tokenizer.pad_token_id), pooling="layers")
    assert isinstance(model, MeanPooledClassifier)
    model.eval()
    records = encode(texts, labels, tokenizer, max_length * windows)
    loader = DataLoader(records, batch_size=64, collate_fn=PadBatch(int(tokenizer.pad_token_id)))
    out: dict[str, list[torch.Tensor]] = {name: [] for name in POOLINGS}
    for batch in loader:
        window = max_length if windows > 1 else 0
        ids, mask, owner = cut_windows(batch["input_ids"], batch["attention_mask"], window)
        states = model.backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        blocks = states.hidden_states[1:]
        one = torch.ones(len(ids), 1, dtype=mask.dtype)
        out["cls"].append(mean_of_tokens(states.pooler_output.unsqueeze(1), one, owner))
        out["mean"].append(mean_of_tokens(blocks[-1], mask, owner))
        out["layers"].append(mean_of_tokens(sum(blocks) / len(blocks), mask, owner))
        out["stack"].append(stacked_means(blocks, mask, owner))
    return {name: torch.cat(vectors) for name, vectors in out.items()}


def fedavg_head(
    train: TensorDataset, test: TensorDataset, sites: int, recipe: dict[str, Any], seed: int
) -> float:
    """Held-out accuracy of a linear head after `rounds` of FedAvg, each site on its share."""
    x, y = train.tensors
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    shares = order.chunk(sites)
    records = len(shares[0])
    batch = min(recipe["batch"], records)
    steps = max(1, round(recipe["passes"] * records / batch))
    rate, rounds = batch / records, recipe["rounds"]
    epsilon = recipe["epsilon"]
    noise = plan_noise(epsilon, 1 / (10 * records), rate, steps * rounds) if epsilon else 0.0
    clip = recipe["clip"] if epsilon else 1e6  # without DP: plain SGD, nothing clipped
    plan = DpSgd(noise, clip, rate, steps, batch, recipe["lr"], "head")
    torch.manual_seed(seed)
    weights = nn.Linear(x.shape[1], 2).state_dict()
    for _ in range(rounds):
        updates = []
        for share in shares:
            head = nn.Linear(x.shape[1], 2)
            head.load_state_dict(weights)
            loader = DataLoader(TensorDataset(x[share], y[share]), batch_size=batch)
            private, optimizer, draws = make_private(head, loader, plan, torch.device("cpu"))
            taken = 0
            while taken < steps:
                for vectors, labels in draws:
                    if len(labels):
                        cross_entropy(private(vectors), labels).backward()
                    optimizer.step()  # an empty draw: noise only
                    optimizer.zero_grad(set_to_none=True)
                    taken += 1
                    if taken >= steps:
                        break
            private.to_standard_module()
            updates.append({k: v.detach().clone() for k, v in head.state_dict().items()})
        weights = {k: sum(u[k] for u in updates) / len(updates) for k in weights}
    head = nn.Linear(x.shape[1], 2)
    head.load_state_dict(weights)
    with torch.no_grad():
        vectors, labels = test.tensors
        return float((head(vectors).argmax(dim=1) == labels).float().mean())


def logistic(train: TensorDataset, test: TensorDataset) -> float:
    """Held-out accuracy of logistic regression on all of `train` without DP: the ceiling of a
    linear head on these features (L2 as scikit-learn's default, C = 1; full-batch L-BFGS)."""
    x, y = train.tensors
    head = nn.Linear(x.shape[1], 2)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = cross_entropy(head(x), y) + head.weight.square().sum() / (2 * len(y))
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        vectors, labels = test.tensors
        return float((head(vectors).argmax(dim=1) == labels).float().mean())


Split = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def reviews(args: argparse.Namespace) -> tuple[pd.DataFrame, Split]:
    """The reviews, and the (training, held-out) row indices for `records` a site and a seed."""
    if args.privacy_split:  # bench/privacy.py's file, split as its server splits each seed
        args.workdir.mkdir(parents=True, exist_ok=True)
        file = args.workdir / f"reviews-{args.records}.parquet"
        write_reviews(args.data, args.sites * args.records, args.eval, 0, file)
        table = read_table(file)
        frame = table.to_pandas()
        row = {text: i for i, text in enumerate(frame.text)}

        def indices(texts: list[str]) -> torch.Tensor:
            return torch.as_tensor([row[text] for text in texts])

        def split(records: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            pool, held = split_holdout(table, args.eval / len(table), seed)
            return indices(pool["text"]), indices(held["text"])

        return frame, split
    frame = pd.read_parquet(args.data).sample(frac=1.0, random_state=0).reset_index(drop=True)
    big = args.sites * max(args.records, args.big_records)
    held_out = torch.arange(big, big + args.eval)
    return frame.head(big + args.eval), lambda records, seed: (
        torch.arange(args.sites * records),
        held_out,
    )


def recipes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The grid: every pooling at the default recipe and without DP, then the recipe's levers."""
    default = {"lr": 2.0, "passes": 20, "batch": 1024, "clip": 1.0, "rounds": args.rounds}
    grid = [default | {"pooling": p, "epsilon": e} for p in POOLINGS for e in (0.0, 1.0, 3.0, 8.0)]
    for lr, passes, batch in ((1.0, 10, 500), (4.0, 20, 1024), (2.0, 40, 1024), (2.0, 10, 250)):
        for epsilon in (1.0, 3.0, 8.0):
            grid.append(default | {"pooling": DEFAULT, "epsilon": epsilon, "lr": lr,
                                   "passes": passes, "batch": batch})  # fmt: skip
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/imdb/train.parquet"))
    parser.add_argument("--records", type=int, default=1000, help="reviews per site")
    parser.add_argument("--big-records", type=int, default=4000, help="0: skip")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--eval", type=int, default=1000, help="held-out reviews")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--windows", type=int, default=1, help="windows of max-length a review")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--privacy-split",
        action="store_true",
        help="bench/privacy.py's reviews and held-out split (--records only)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-privacy"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    frame, split = reviews(args)
    vectors = pooled(list(frame.text), list(frame.label), args.max_length, args.windows)
    labels = torch.as_tensor(frame.label.to_numpy())
    report: dict[str, Any] = {"setup": {k: str(v) for k, v in vars(args).items()},
                              "features-seconds": round(time.monotonic() - started, 1),
                              "results": []}  # fmt: skip
    big = args.big_records and not args.privacy_split
    sizes = {"": args.records} | ({"big ": args.big_records} if big else {})
    for prefix, records in sizes.items():
        grid = recipes(args) if not prefix else [
            {"lr": 2.0, "passes": 20, "batch": 1024, "clip": 1.0, "rounds": args.rounds,
             "pooling": DEFAULT, "epsilon": epsilon} for epsilon in (0.0, 8.0)
        ]  # fmt: skip
        ceilings = [{"pooling": p, "head": "logistic regression, no DP"} for p in POOLINGS]
        for recipe in ceilings + grid:
            x, accuracy = vectors[recipe["pooling"]], []
            for seed in range(args.seeds):
                train, held_out = split(records, seed)
                sets = (
                    TensorDataset(x[train], labels[train]),
                    TensorDataset(x[held_out], labels[held_out]),
                )
                head = "head" in recipe
                accuracy.append(
                    logistic(*sets) if head else fedavg_head(*sets, args.sites, recipe, seed)
                )
            row = {"sites": f"{args.sites} x {records}", **recipe,
                   "mean": round(statistics.fmean(accuracy), 4),
                   "std": round(statistics.pstdev(accuracy), 4), "seeds": accuracy}  # fmt: skip
            report["results"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "seeds"}), file=sys.stderr)
            publish(report, args.out)
    report["wall-seconds"] = round(time.monotonic() - started, 1)
    publish(report, args.out)
    print(json.dumps(report["results"], indent=1))


if __name__ == "__main__":
    main()

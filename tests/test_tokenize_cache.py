"""A node tokenises once: the token cache's hits, misses and invalidation."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

import fedllm.learning.partition
from fedllm.cli.demo import tiny_tokenizer
from fedllm.learning.batches import Encoded, pack
from fedllm.settings import NodeSettings, RunSettings
from supernode.site import cache_key, open_site
from supernode.token_cache import TokenCache


def splits(seed: int = 0) -> dict[str, Encoded]:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, 50, rng.integers(1, 9)).tolist() for _ in range(20)]
    return {"train": pack(rows[:15], [1] * 15), "val": pack(rows[15:], [0] * 5)}


def same(a: dict[str, Encoded], b: dict[str, Encoded]) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(getattr(a[name], field), getattr(b[name], field))
        for name in a
        for field in ("tokens", "offsets", "labels")
    )


def test_built_once_then_hit(tmp_path: Path) -> None:
    cache, builds = TokenCache(tmp_path), []

    def build() -> dict[str, Encoded]:
        builds.append(1)
        return splits()

    first, hit_first = cache.get("k1", build)
    second, hit_second = cache.get("k1", build)
    assert (hit_first, hit_second, len(builds)) == (False, True, 1)
    assert same(first, second)
    assert cache.get("k2", build)[1] is False and len(builds) == 2
    assert cache.get(None, build)[1] is False and len(builds) == 3  # no key: never cached


def test_a_damaged_entry_is_rebuilt_and_replaced(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save("k", splits())
    cache.path("k").write_bytes(b"not a zip file")
    found, hit = cache.get("k", lambda: splits(1))
    assert not hit and same(found, splits(1))
    assert same(cache.load("k") or {}, splits(1))
    assert list(tmp_path.glob("*.part")) == []


def test_only_the_most_recent_entries_are_kept(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path, keep=2)
    for key in ("a", "b", "c"):
        cache.save(key, splits())
    assert sorted(path.name for path in tmp_path.glob("tokens-*")) == [
        "tokens-b.npz", "tokens-c.npz"
    ]  # fmt: skip


def test_an_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    found, hit = TokenCache(blocker / "cache").get("k", splits)
    assert not hit and same(found, splits())


@pytest.fixture
def data(demo_assets: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the demo reviews, free to change."""
    return Path(shutil.copy(demo_assets[1], tmp_path / "reviews.parquet"))


def test_key_follows_tokenizer_data_split_and_length(data: Path) -> None:
    run = RunSettings(dataset=str(data), max_length=64)
    node = NodeSettings(partition_id=0, num_partitions=2)
    tokenizer = tiny_tokenizer()
    key = cache_key(run, node, tokenizer)
    assert key is not None and key == cache_key(run, node, tiny_tokenizer())
    changed = [
        cache_key(run.model_copy(update={"max_length": 32}), node, tokenizer),
        cache_key(run.model_copy(update={"val_fraction": 0.2}), node, tokenizer),
        cache_key(run, node.model_copy(update={"partition_id": 1}), tokenizer),
        cache_key(run.model_copy(update={"partitioner": "dirichlet"}), node, tokenizer),
    ]
    other = tiny_tokenizer()
    other.add_tokens(["cinematography"])
    changed.append(cache_key(run, node, other))
    data.write_bytes(data.read_bytes() + b"\0")  # same name, other bytes
    changed.append(cache_key(run, node, tokenizer))
    assert len({key, *changed}) == len(changed) + 1
    missing = run.model_copy(update={"dataset": str(data.with_name("gone.parquet"))})
    assert cache_key(missing, node, tokenizer) is None  # the uncached path reports it


def test_a_node_reads_and_tokenises_its_data_once(
    data: Path, demo_assets: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunSettings(model=str(demo_assets[0]), dataset=str(data), max_length=32)
    node_config = {"partition-id": 1, "num-partitions": 2, "threads": 1,
                   "cache-dir": str(tmp_path / "cache")}  # fmt: skip
    context = Context(1, 1, node_config, RecordDict(), run.to_run_config())  # type: ignore[arg-type]
    first = open_site(context)

    def no_reading(*args: object) -> None:
        raise AssertionError("a cache hit must not read the data")

    monkeypatch.setattr(fedllm.learning.partition, "node_data", no_reading)
    second = open_site(context)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert same(
        {"train": first.train, "val": first.val}, {"train": second.train, "val": second.val}
    )
    assert len(first.train) + len(first.val) > 0 and len(list((tmp_path / "cache").iterdir())) == 1

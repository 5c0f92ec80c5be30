"""Tokenised node data on disk: a node tokenises its reviews once, not once per message.

Flower 1.42 starts a fresh `flwr-clientapp` process for every message (train and evaluate,
every round), so nothing kept in memory survives from one message to the next. The cache is
keyed by everything the token ids depend on: the tokenizer's full definition, the data's
bytes, how the data is split and `max-length`; any change gives a new key, hence a miss.
"""

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from fedllm.learning.batches import Encoded

VERSION = 1  # bump when the stored layout or the tokenisation code changes
KEEP = 8  # entries kept per cache directory, least recently used dropped first
FIELDS = ("tokens", "offsets", "labels")
log = logging.getLogger(__name__)


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    body = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(body).hexdigest()[:32]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a data file is read whole anyway on a miss)."""
    sha = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's vocabulary, merges, normalisation and special tokens, hashed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab())
    return digest(
        type(tokenizer).__name__,
        hashlib.sha256(body.encode()).hexdigest(),
        tokenizer.pad_token,
        tokenizer.truncation_side,
        tokenizer.all_special_tokens,
    )


class ArrayCache:
    """`<prefix>-<key>.npz` files of named arrays under one directory, written atomically."""

    def __init__(self, directory: Path, prefix: str, keep: int = KEEP) -> None:
        self.directory = directory
        self.prefix = prefix
        self.keep = keep

    def path(self, key: str) -> Path:
        """Where the entry for `key` lives."""
        return self.directory / f"{self.prefix}-{key}.npz"

    def load_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached arrays, or None when absent or unreadable (then rebuilt and replaced)."""
        path = self.path(key)
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in stored.files}
            os.utime(path)  # recently used: pruned last
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        return arrays

    def save_arrays(self, key: str, arrays: dict[str, Any]) -> None:
        """Store `arrays`; a failure (full or read-only disk) only costs the next message time."""
        part: Path | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=self.directory, suffix=".part", delete=False
            ) as out:
                part = Path(out.name)
                np.savez(out, **arrays)
            os.replace(part, self.path(key))
        except OSError as err:
            log.warning("%s cache %s not written: %s", self.prefix, self.directory, err)
            if part is not None:
                part.unlink(missing_ok=True)
            return
        self.prune()

    def prune(self) -> None:
        """Keep the `keep` most recently used entries."""
        entries = sorted(
            self.directory.glob(f"{self.prefix}-*.npz"),
            key=lambda path: path.stat().st_mtime,
            reverse=True,
        )
        for stale in entries[self.keep :]:
            stale.unlink(missing_ok=True)


class TokenCache(ArrayCache):
    """Tokenised splits (`Encoded` each) as `tokens-<key>.npz` files."""

    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        super().__init__(directory, "tokens", keep)

    def load(self, key: str) -> dict[str, Encoded] | None:
        """The cached splits, or None when absent or unreadable."""
        arrays = self.load_arrays(key)
        if arrays is None:
            return None
        names = {name.partition(".")[0] for name in arrays}
        try:
            return {
                name: Encoded(*(arrays[f"{name}.{field}"] for field in FIELDS)) for name in names
            }
        except KeyError:
            return None

    def save(self, key: str, splits: dict[str, Encoded]) -> None:
        """Store `splits`."""
        arrays = {
            f"{name}.{field}": getattr(encoded, field)
            for name, encoded in splits.items()
            for field in FIELDS
        }
        self.save_arrays(key, arrays)

    def get(
        self, key: str | None, build: Callable[[], dict[str, Encoded]]
    ) -> tuple[dict[str, Encoded], bool]:
        """(splits, hit): the cached entry, else `build()` stored under `key` (None: no caching)."""
        if key is not None and (splits := self.load(key)) is not None:
            return splits, True
        splits = build()
        if key is not None:
            self.save(key, splits)
        return splits, False

"""Token data: the train / validation / test splits and the order in which training sees them.

Every split is a list of token arrays (memory-mapped for token files, so a dataset is never loaded
into RAM whole) cut into non-overlapping sequences of `seq_len + 1` tokens (with
`data.order=random_offsets`, the training split into windows at every token offset). Which sequences
form the batch of optimizer step `s` is a pure function of `(s, data_seed)`, so the data position of a
resumed run is just its step number: nothing is repeated or skipped across a resume.
"""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptx.config import ConfigError, DataConfig, DataFormat, DataOrder, SplitOrder, Tokenizer
from gptx.files import LLMC_HEADER_BYTES, LLMC_MAGIC, write_atomic
from gptx.tokenizer import ASSETS, tokenizer_for

BUNDLED_CORPUS = ASSETS / "tinyshakespeare.txt"
BUNDLED_CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@dataclass(frozen=True)
class Split:
    """One split of the data: token arrays (shards) read as sequences of seq_len inputs + 1 target.

    Sequence i of a shard starts at token i * stride: stride seq_len (the default) cuts the shard into
    non-overlapping sequences; stride 1 makes every window of seq_len + 1 tokens a sequence.
    """

    shards: tuple[np.ndarray, ...]
    seq_len: int
    stride: int | None = None

    @property
    def _step(self) -> int:
        return self.stride or self.seq_len

    @functools.cached_property
    def _shard_starts(self) -> np.ndarray:
        counts = [(len(s) - 1 - self.seq_len) // self._step + 1 if len(s) > self.seq_len else 0
                  for s in self.shards]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def n_sequences(self) -> int:
        """Full sequences in the split (sequences never cross a shard boundary)."""
        return int(self._shard_starts[-1])

    @property
    def n_tokens(self) -> int:
        """Tokens in the split's shards."""
        return int(sum(len(s) for s in self.shards))

    def sequences(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets (int64, shape [len(indices), seq_len]) for these sequences."""
        rows = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        shard_of = np.searchsorted(self._shard_starts, indices, side="right") - 1
        for row, (index, shard) in enumerate(zip(indices, shard_of)):
            start = (int(index) - int(self._shard_starts[shard])) * self._step
            rows[row] = self.shards[shard][start : start + self.seq_len + 1]
        batch = torch.from_numpy(rows)
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


@dataclass(frozen=True)
class TokenData:
    """The three splits of a run's data."""

    train: Split
    val: Split
    test: Split


def load_data(cfg: DataConfig, seq_len: int, vocab_size: int) -> TokenData:
    """Load the configured data and check that every split holds at least one full sequence."""
    if cfg.format is DataFormat.text:
        shards = _text_splits(cfg)
    else:
        shards = _token_file_splits(Path(cfg.path))  # type: ignore[arg-type]
    windows = 1 if cfg.order is DataOrder.random_offsets else None  # the training split only
    data = TokenData(Split(tuple(shards[0]), seq_len, windows), *(Split(tuple(s), seq_len) for s in shards[1:]))
    for name in ("train", "val", "test"):
        split: Split = getattr(data, name)
        if split.n_sequences == 0:
            raise ConfigError(
                f"data {cfg.name!r}: the {name} split has {split.n_tokens} tokens, fewer than one "
                f"sequence of {seq_len + 1}; use more data or a shorter train.seq_len"
            )
    _check_token_range(data, vocab_size)
    return data


def _utf8_text(raw: bytes, path: Path) -> str:
    """The corpus as text: UTF-8 without NUL bytes (a binary file given as text is refused in one line)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"data.path={path} is not UTF-8 text (byte {err.start}); data.format=text needs a "
                          "text file, token files need data.format=tokens") from None
    if "\x00" in text:
        raise ConfigError(f"data.path={path} holds NUL bytes: a binary file, not text; token files need "
                          "data.format=tokens")
    return text


def _text_splits(cfg: DataConfig) -> list[list[np.ndarray]]:
    path = Path(cfg.path) if cfg.path else BUNDLED_CORPUS
    if not path.is_file():
        raise ConfigError(f"data.path={path} is not a file")
    raw = path.read_bytes()
    if path == BUNDLED_CORPUS and hashlib.sha256(raw).hexdigest() != BUNDLED_CORPUS_SHA256:
        raise ConfigError(f"the bundled corpus {path} does not match its sha256: reinstall gptx")
    tokens = _tokenize(_utf8_text(raw, path), cfg.tokenizer, cfg.vocab)
    n = len(tokens)
    if cfg.split_order is SplitOrder.train_test_val:
        val_start = int(n * (1 - cfg.val_fraction))
        test_start = val_start - int(n * cfg.test_fraction)
        return [[tokens[:test_start]], [tokens[val_start:]], [tokens[test_start:val_start]]]
    n_test = int(n * cfg.test_fraction)
    n_val = int(n * cfg.val_fraction)
    n_train = n - n_val - n_test
    return [[tokens[:n_train]], [tokens[n_train : n_train + n_val]], [tokens[n_train + n_val :]]]


@functools.lru_cache(maxsize=4)
def _tokenize(text: str, tokenizer: Tokenizer, vocab: str | None) -> np.ndarray:
    ids = tokenizer_for(DataConfig(tokenizer=tokenizer, vocab=vocab)).encode_ordinary(text)
    return np.asarray(ids, dtype=np.uint16)


def _token_file_splits(directory: Path) -> list[list[np.ndarray]]:
    if not directory.is_dir():
        raise ConfigError(f"data.path={directory} is not a directory")
    found = {name: sorted(directory.glob(f"*{name}*.bin")) for name in ("train", "val", "test")}
    for name in ("train", "val"):
        if not found[name]:
            raise ConfigError(f"data.path={directory} has no *{name}*.bin token files")
    splits = {name: [_read_token_file(p) for p in paths] for name, paths in found.items()}
    if not splits["test"]:
        # No separate test files: the second half of the validation tokens is the fixed test set.
        val = np.concatenate(splits["val"]) if len(splits["val"]) > 1 else splits["val"][0]
        half = len(val) // 2
        splits["val"], splits["test"] = [val[:half]], [val[half:]]
    return [splits["train"], splits["val"], splits["test"]]


def _read_token_file(path: Path) -> np.ndarray:
    """Memory-map one uint16 token file, with or without llm.c's 1 KiB header."""
    size = path.stat().st_size
    header = np.fromfile(path, dtype=np.int32, count=3) if size >= LLMC_HEADER_BYTES else None
    if header is not None and header[0] == LLMC_MAGIC:
        n_tokens = int(header[2])
        if LLMC_HEADER_BYTES + 2 * n_tokens > size:
            raise ConfigError(f"{path}: header promises {n_tokens} tokens but the file is truncated")
        return np.memmap(path, dtype=np.uint16, mode="r", offset=LLMC_HEADER_BYTES, shape=(n_tokens,))
    if size % 2:
        raise ConfigError(f"{path}: {size} bytes is not a whole number of uint16 tokens")
    if size == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")


def _check_token_range(data: TokenData, vocab_size: int, probe: int = 1 << 20) -> None:
    """Catch data tokenized for another vocabulary, from the first tokens of each split."""
    for split in (data.train, data.val, data.test):
        for shard in split.shards:
            if len(shard) and int(np.max(shard[:probe])) >= vocab_size:
                raise ConfigError(
                    f"token id {int(np.max(shard[:probe]))} is outside model.vocab_size={vocab_size}"
                )


def data_sha256(data: TokenData, rehash: bool = False) -> str:
    """Fingerprint of every token of every split, in order (read in chunks: memmaps stay on disk).

    Token files are hashed once and the digest cached under a manifest of their paths, sizes and
    modification times (`data_cache_dir()`): a run starting or resuming on an unchanged corpus (20 GB for
    FineWeb-10B) reads none of it again. Any change of size or mtime hashes anew. `rehash=True`, or
    GPTX_DATA_REHASH=1 in the environment, re-verifies every token and refreshes the cache.
    """
    manifest = _token_file_manifest(data)
    if manifest is None:  # tokenized text, in memory: cheap to hash
        return _hash_tokens(data)
    text = json.dumps(manifest, sort_keys=True)
    cache = data_cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    if not (rehash or os.environ.get(REHASH_ENV) == "1"):
        try:
            cached = json.loads(cache.read_text())
            if cached["manifest"] == manifest:
                return str(cached["data_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = _hash_tokens(data)
    try:
        write_atomic(cache, (json.dumps({"manifest": manifest, "data_sha256": digest}, indent=1) + "\n").encode())
    except OSError:  # a read-only cache costs the next start a re-hash, nothing more
        pass
    return digest


REHASH_ENV = "GPTX_DATA_REHASH"


def data_cache_dir() -> Path:
    """Where corpus digests are cached: $GPTX_CACHE_DIR, else $XDG_CACHE_HOME/gptx or ~/.cache/gptx."""
    if os.environ.get("GPTX_CACHE_DIR"):
        return Path(os.environ["GPTX_CACHE_DIR"]) / "data_sha256"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gptx" / "data_sha256"


def _token_file_manifest(data: TokenData) -> list[dict[str, object]] | None:
    """Each shard's file, offset, length, size and mtime; None unless every shard is a memory-mapped file."""
    manifest: list[dict[str, object]] = [{"format": 1}]
    for name in ("train", "val", "test"):
        for shard in getattr(data, name).shards:
            if not isinstance(shard, np.memmap) or not shard.filename:
                return None
            stat = os.stat(shard.filename)
            base = shard.base
            while base is not None and not isinstance(base, mmap.mmap):
                base = getattr(base, "base", None)
            start = (shard.ctypes.data - _address(base)) if isinstance(base, mmap.mmap) else None
            manifest.append({"split": name, "file": str(Path(shard.filename).resolve()), "offset": int(shard.offset),
                             "start": start, "tokens": len(shard), "dtype": str(shard.dtype), "size": stat.st_size,
                             "mtime_ns": stat.st_mtime_ns})
    return manifest


def _address(buffer: mmap.mmap) -> int:
    """The address of a mapped file's first byte."""
    return np.frombuffer(buffer, dtype=np.uint8, count=1).ctypes.data


def _hash_tokens(data: TokenData) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        for shard in getattr(data, name).shards:
            h.update(f"{name}:{shard.dtype}:{len(shard)}\0".encode())
            for start in range(0, len(shard), 1 << 24):
                h.update(np.ascontiguousarray(shard[start : start + (1 << 24)]).tobytes())
    return h.hexdigest()


class TrainOrder:
    """Which training sequences make up each optimizer step's batch.

    permutation: sample `g = step * batch_size + j` is position `g mod n` of epoch `g // n`; with a
    data_seed, each epoch is a permutation seeded by (data_seed, epoch), else corpus order.
    random_offsets: batch_size draws, with replacement, uniform over the n sequences (every token offset's
    window, Split stride 1), from a generator seeded by (data_seed, step), as nanoGPT's get_batch draws.
    """

    def __init__(self, n_sequences: int, batch_size: int, data_seed: int | None,
                 order: DataOrder = DataOrder.permutation):
        self.n_sequences = n_sequences
        self.batch_size = batch_size
        self.data_seed = data_seed
        self.order = order
        self._cached: tuple[int, np.ndarray] | None = None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            if self.data_seed is None:
                order = np.arange(self.n_sequences, dtype=np.int64)
            else:
                order = np.random.default_rng([self.data_seed, epoch]).permutation(self.n_sequences)
            self._cached = (epoch, order)
        return self._cached[1]

    def step_indices(self, step: int) -> np.ndarray:
        """Sequence indices of the batch of optimizer step `step` (0-based)."""
        if self.order is DataOrder.random_offsets:
            return np.random.default_rng([self.data_seed, step]).integers(self.n_sequences, size=self.batch_size)
        samples = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs, positions = np.divmod(samples, self.n_sequences)
        out = np.empty_like(samples)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._epoch_order(int(epoch))[positions[mask]]
        return out

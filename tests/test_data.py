"""Splits, sequences, training order and the token-file formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptx.config import ConfigError, DataConfig, DataFormat, DataOrder
from gptx.data import LLMC_MAGIC, TrainOrder, load_data

from conftest import typed_config


def test_shakespeare_splits_are_fixed_positions():
    data = load_data(DataConfig(), seq_len=128, vocab_size=50257)
    # 338,025 tokens: 5% (16,901) validation, 5% (16,901) test at the end, the rest training.
    assert (data.train.n_tokens, data.val.n_tokens, data.test.n_tokens) == (304_223, 16_901, 16_901)
    assert data.test.n_sequences == (16_901 - 1) // 128 == 132
    assert data.train.shards[0][:4].tolist() == [5962, 22307, 25, 198]  # "First Citizen:\n"


def test_sequences_are_inputs_and_shifted_targets():
    data = load_data(DataConfig(), seq_len=8, vocab_size=50257)
    x, y = data.train.sequences(np.array([0, 2]))
    raw = torch.from_numpy(data.train.shards[0][:25].astype(np.int64))
    assert x.dtype == torch.int64 and x.shape == (2, 8)
    assert torch.equal(x[0], raw[0:8]) and torch.equal(y[0], raw[1:9])
    assert torch.equal(x[1], raw[16:24]) and torch.equal(y[1], raw[17:25])


def test_corpus_order_and_epoch_wrap():
    order = TrainOrder(n_sequences=10, batch_size=4, data_seed=None)
    assert order.step_indices(0).tolist() == [0, 1, 2, 3]
    assert order.step_indices(2).tolist() == [8, 9, 0, 1]


def test_seeded_order_is_a_fixed_permutation_per_epoch():
    a, b = TrainOrder(10, 5, data_seed=3), TrainOrder(10, 5, data_seed=3)
    epoch0 = np.concatenate([a.step_indices(0), a.step_indices(1)])
    assert sorted(epoch0.tolist()) == list(range(10)) and epoch0.tolist() != list(range(10))
    assert b.step_indices(1).tolist() == epoch0[5:].tolist()  # random access: resume needs no history
    epoch1 = np.concatenate([a.step_indices(2), a.step_indices(3)])
    assert epoch1.tolist() != epoch0.tolist()
    assert TrainOrder(10, 5, data_seed=4).step_indices(0).tolist() != epoch0[:5].tolist()


def test_random_offsets_read_a_window_at_every_token_offset():
    data = load_data(DataConfig(order=DataOrder.random_offsets), seq_len=8, vocab_size=50257)
    # every window of 8 + 1 tokens is a sequence (nanoGPT's randint(len(data) - block_size)); val and test
    # stay cut into non-overlapping sequences
    assert data.train.n_sequences == 304_223 - 8
    assert data.test.n_sequences == (16_901 - 1) // 8
    raw = torch.from_numpy(data.train.shards[0][-9:].astype(np.int64))
    x, y = data.train.sequences(np.array([3, data.train.n_sequences - 1]))
    assert torch.equal(x[0], torch.from_numpy(data.train.shards[0][3:11].astype(np.int64)))
    assert torch.equal(x[1], raw[:8]) and torch.equal(y[1], raw[1:])


def test_random_offsets_are_a_pure_function_of_seed_and_step():
    a = TrainOrder(1000, 12, data_seed=1337, order=DataOrder.random_offsets)
    b = TrainOrder(1000, 12, data_seed=1337, order=DataOrder.random_offsets)
    steps = [a.step_indices(s).tolist() for s in range(50)]
    assert [b.step_indices(s).tolist() for s in reversed(range(50))] == steps[::-1]  # random access
    draws = np.concatenate(steps)
    assert len(draws) == 600 and len(set(draws.tolist())) < 600  # with replacement
    assert draws.min() >= 0 and draws.max() < 1000
    other = TrainOrder(1000, 12, data_seed=1338, order=DataOrder.random_offsets)
    assert other.step_indices(0).tolist() != steps[0]
    with pytest.raises(ConfigError, match="data.order=random_offsets draws its windows from data_seed: set data_seed"):
        typed_config("data.order=random_offsets")


def write_nanogpt(path, tokens):
    np.asarray(tokens, dtype=np.uint16).tofile(path)


def write_llmc(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [LLMC_MAGIC, 1, len(tokens)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def test_token_files_both_formats_and_shards(tmp_path):
    write_llmc(tmp_path / "fw_train_000001.bin", range(0, 100))
    write_llmc(tmp_path / "fw_train_000002.bin", range(100, 150))
    write_nanogpt(tmp_path / "val.bin", range(1000, 1041))
    cfg = DataConfig(name="t", format=DataFormat.tokens, path=str(tmp_path))
    data = load_data(cfg, seq_len=10, vocab_size=50257)
    assert data.train.n_sequences == 9 + 4  # sequences never cross a shard
    x, y = data.train.sequences(np.array([9]))  # first sequence of the second shard
    assert x[0].tolist() == list(range(100, 110)) and y[0].tolist() == list(range(101, 111))
    assert isinstance(data.train.shards[0], np.memmap)
    # No test files: the second half of validation is the test set.
    assert data.val.shards[0].tolist() == list(range(1000, 1020))
    assert data.test.shards[0].tolist() == list(range(1020, 1041))


def test_token_directory_problems_are_clear(tmp_path):
    cfg = DataConfig(name="t", format=DataFormat.tokens, path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"no \*train\*\.bin"):
        load_data(cfg, 8, 50257)
    (tmp_path / "train.bin").write_bytes(b"")
    write_nanogpt(tmp_path / "val.bin", range(100))
    with pytest.raises(ConfigError, match="train split has 0 tokens"):
        load_data(cfg, 8, 50257)
    write_nanogpt(tmp_path / "train.bin", [60000] * 50)
    with pytest.raises(ConfigError, match="outside model.vocab_size"):
        load_data(cfg, 8, 50257)
    (tmp_path / "train.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ConfigError, match="whole number"):
        load_data(cfg, 8, 50257)


@pytest.mark.parametrize(("content", "message"), [(b"\xff\xfe\x00 not UTF-8 \xc3\x28" * 64, "is not UTF-8 text"),
                                                  (b"\x00" * 4096, "holds NUL bytes")])
def test_a_binary_file_as_text_data_is_one_line(tmp_path, content, message):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_data(DataConfig(path=str(path)), 32, 50257)
    assert "\n" not in str(caught.value) and "data.format=tokens" in str(caught.value)


def _token_dir(tmp_path, write=True):
    if write:
        np.arange(4000, dtype=np.uint16).tofile(tmp_path / "train.bin")
        np.arange(2000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return load_data(DataConfig(name="t", format=DataFormat.tokens, path=str(tmp_path)), 16, 50257)


def test_the_corpus_hash_is_cached_by_size_and_mtime_and_reverified_on_demand(tmp_path, monkeypatch):
    import os

    import gptx.data
    from gptx.data import _hash_tokens, data_sha256

    monkeypatch.setenv("GPTX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTX_DATA_REHASH", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    data = _token_dir(corpus)
    load = lambda: _token_dir(corpus, write=False)  # noqa: E731
    first = data_sha256(data)
    assert first == _hash_tokens(data)  # the same fingerprint as before the cache
    assert len(list((tmp_path / "cache" / "data_sha256").glob("*.json"))) == 1

    def no_reading(data):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(gptx.data, "_hash_tokens", no_reading)
    assert data_sha256(load()) == first  # a restart reads no token
    monkeypatch.undo()
    monkeypatch.setenv("GPTX_CACHE_DIR", str(tmp_path / "cache"))

    # Same size, same mtime, other tokens: only a re-verification sees it.
    stat = os.stat(corpus / "val.bin")
    np.arange(2000, 4000, dtype=np.uint16).tofile(corpus / "val.bin")
    os.utime(corpus / "val.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = load()
    assert data_sha256(changed) == first
    assert data_sha256(changed, rehash=True) == _hash_tokens(changed) != first
    assert data_sha256(changed) == _hash_tokens(changed)  # the re-verification refreshed the cache
    monkeypatch.setenv("GPTX_DATA_REHASH", "1")
    assert data_sha256(changed) == _hash_tokens(changed)

    # A new mtime alone hashes anew.
    monkeypatch.delenv("GPTX_DATA_REHASH")
    np.arange(4000, dtype=np.uint16).tofile(corpus / "train.bin")
    os.utime(corpus / "train.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert data_sha256(load()) == _hash_tokens(load())
    assert len(list((tmp_path / "cache" / "data_sha256").glob("*.json"))) == 2


def test_the_val_and_test_halves_of_one_file_are_told_apart_and_text_is_not_cached(tmp_path, monkeypatch):
    from gptx.data import _token_file_manifest

    monkeypatch.setenv("GPTX_CACHE_DIR", str(tmp_path / "cache"))
    manifest = _token_file_manifest(_token_dir(tmp_path))
    val, test = manifest[2], manifest[3]
    assert (val["split"], test["split"]) == ("val", "test") and val["file"] == test["file"]
    assert (val["start"], test["start"]) == (0, 2000) and val["tokens"] == test["tokens"] == 1000
    assert _token_file_manifest(load_data(DataConfig(), 16, 50257)) is None

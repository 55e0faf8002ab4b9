"""GPT-2 tokenization from the bundled ranks, with no network."""

from __future__ import annotations

import hashlib

import pytest
import tiktoken

from gptx.tokenizer import BPE_RANKS_PATH, BPE_RANKS_SHA256, END_OF_TEXT_ID, gpt2_tokenizer


def test_known_encoding():
    assert gpt2_tokenizer().encode("Every effort moves you") == [6109, 3626, 6100, 345]


def test_vocabulary_and_end_of_text():
    tok = gpt2_tokenizer()
    assert tok.n_vocab == 50257
    assert tok.encode("<|endoftext|>", allowed_special="all") == [END_OF_TEXT_ID] == [50256]


def test_round_trip_of_awkward_text():
    text = "Hello, world!  It's 3.14159…\n\n\tÜnïcödé 🤖 don't we'll"
    tok = gpt2_tokenizer()
    assert tok.decode(tok.encode_ordinary(text)) == text


def test_bundled_ranks_match_their_sha256():
    assert hashlib.sha256(BPE_RANKS_PATH.read_bytes()).hexdigest() == BPE_RANKS_SHA256


def test_works_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tokenizer tried to reach the network")

    monkeypatch.setattr("socket.socket.connect", no_network)
    monkeypatch.setattr("socket.create_connection", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache to fall back on either
    gpt2_tokenizer.cache_clear()
    try:
        assert gpt2_tokenizer().encode(" Shakespeare") == [22197]
    finally:
        gpt2_tokenizer.cache_clear()


def test_tampered_ranks_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / "r50k_base.tiktoken"
    bad.write_bytes(BPE_RANKS_PATH.read_bytes().replace(b"IQ== 0", b"IQ== 1", 1))
    monkeypatch.setattr("gptx.tokenizer.BPE_RANKS_PATH", bad)
    gpt2_tokenizer.cache_clear()
    try:
        with pytest.raises(ValueError, match="[Hh]ash"):
            gpt2_tokenizer()
    finally:
        gpt2_tokenizer.cache_clear()


def test_same_ranks_as_tiktoken_gpt2_pattern():
    # The pattern string must be tiktoken's gpt2 one (the data README states it).
    from gptx.tokenizer import GPT2_PATTERN
    assert GPT2_PATTERN == r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
    assert isinstance(gpt2_tokenizer(), tiktoken.Encoding)

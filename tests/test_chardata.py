"""Character-level data: nanoGPT's vocabulary and validation cut, decoded wherever a run's text is read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptx import evaluate, generate
from gptx.config import ConfigError, DataConfig, SplitOrder, Tokenizer
from gptx.data import BUNDLED_CORPUS, load_data
from gptx.files import SAMPLE_FILE
from gptx.tokenizer import CharTokenizer, tokenizer_for
from gptx.train import train

from conftest import typed_config

CORPUS = BUNDLED_CORPUS.read_text(encoding="utf-8")
N = len(CORPUS)  # 1,115,394 characters


def test_the_vocabulary_is_the_corpus_sorted_characters():
    cfg = typed_config("data=shakespeare_char")
    assert cfg.data.vocab == "".join(sorted(set(CORPUS)))
    assert cfg.model.vocab_size == len(cfg.data.vocab) == 65
    assert cfg.data.vocab[:2] == "\n " and cfg.data.vocab[-1] == "z"


def test_validation_is_nanogpts_last_tenth_and_test_sits_before_it():
    data = load_data(typed_config("data=shakespeare_char").data, seq_len=64, vocab_size=65)
    val_start = int(N * 0.9)  # nanoGPT's cut: 1,003,854
    test_start = val_start - int(N * 0.05)
    assert (data.train.n_tokens, data.test.n_tokens, data.val.n_tokens) == (948_085, 55_769, 111_540)
    decode = tokenizer_for(typed_config("data=shakespeare_char").data).decode
    assert decode(data.val.shards[0].tolist()) == CORPUS[val_start:]
    assert decode(data.test.shards[0].tolist()) == CORPUS[test_start:val_start]
    assert decode(data.train.shards[0].tolist()) == CORPUS[:test_start]
    assert data.val.n_sequences == (111_540 - 1) // 64 == 1742


def test_the_char_tokenizer_round_trips_and_names_missing_characters():
    tok = CharTokenizer("\n abc")
    assert tok.encode("a b\n") == [2, 1, 3, 0] and tok.decode([4, 2]) == "ca"
    with pytest.raises(ConfigError, match=r"characters 'zé' are not in the 5-character vocabulary"):
        tok.encode("zéa")
    assert tokenizer_for(None).encode("Every effort moves you") == [6109, 3626, 6100, 345]  # GPT-2's


def test_a_corpus_with_characters_outside_the_vocabulary_is_refused(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("café " * 100, encoding="utf-8")
    cfg = DataConfig(name="t", path=str(path), tokenizer=Tokenizer.char, vocab=" acf",
                     split_order=SplitOrder.train_test_val)
    with pytest.raises(ConfigError, match="'é' are not in the 4-character vocabulary"):
        load_data(cfg, 8, 4)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=shakespeare_char", "model.vocab_size=50257"],
     "model.vocab_size=50257 but data.vocab has 65 characters: set model.vocab_size=65"),
    (["data.tokenizer=char"], "data.tokenizer=char needs data.vocab"),
    (["data=shakespeare_char", "data.vocab=abca", "model.vocab_size=4"], "data.vocab repeats a character"),
    (["data.vocab=abc"], "data.vocab is only read with data.tokenizer=char"),
])
def test_inconsistent_vocabularies_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        typed_config(*overrides)


def test_gpt2_text_data_keeps_its_splits():
    cfg = typed_config().data
    assert (cfg.tokenizer, cfg.vocab, cfg.split_order) == (Tokenizer.gpt2, None, SplitOrder.train_val_test)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A completed tiny character-level run."""
    run_dir = tmp_path_factory.mktemp("char_run")
    result = train(typed_config("data=shakespeare_char", "train.max_steps=3", "train.sample_tokens=12"), run_dir)
    assert result["status"] == "completed"
    return run_dir, result


def test_the_smoke_sample_is_characters_and_generate_reproduces_it(char_run, capsys):
    run_dir, _ = char_run
    sample = (run_dir / SAMPLE_FILE).read_text().rstrip("\n")
    assert sample.startswith("Every effort moves you") and len(sample) == len("Every effort moves you") + 12
    assert generate.main([str(run_dir), "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == sample


def test_evaluate_reads_the_runs_vocabulary_and_test_split(char_run, capsys):
    run_dir, result = char_run
    assert evaluate.main([str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_loss"] == result["test_loss"] and out["data"] == "shakespeare_char"
    assert np.isfinite(out["test_loss"]) and out["test_loss"] < np.log(65) + 1

"""evaluate, generate and export on a finished tiny run, a lone gptx file and an HF-layout export."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import save_file

from gptx.data import BUNDLED_CORPUS
from gptx.files import MODEL_FILE, SAMPLE_FILE
from gptx.run import train
from gptx.tools import evaluate, export, generate
from gptx.tools.load import load_model

from conftest import REPO, run_gptx, typed_config

VOCAB = 50257


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A completed tiny run (untied head, no QKV bias: the study's baseline architecture)."""
    run_dir = tmp_path_factory.mktemp("run")
    result = train(typed_config("train.max_steps=3", "train.sample_tokens=5"), run_dir)
    assert result["status"] == "completed"
    return run_dir, result


def evaluated(capsys, *argv: str) -> dict:
    assert evaluate.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_reproduces_the_runs_test_loss(run, capsys):
    run_dir, result = run
    out = evaluated(capsys, str(run_dir))
    assert out["test_loss"] == result["test_loss"]  # same data, batches and arithmetic: same bits
    assert out["test_tokens"] == result["test_tokens"] and out["layout"] == "gptx"
    assert out["perplexity"] == pytest.approx(math.exp(result["test_loss"]))


def test_a_lone_gptx_file_carries_its_config(run, tmp_path, capsys):
    run_dir, result = run
    shutil.copy(run_dir / MODEL_FILE, tmp_path / "weights.safetensors")
    assert evaluated(capsys, str(tmp_path / "weights.safetensors"))["test_loss"] == result["test_loss"]


def test_evaluate_flags_choose_the_test_set(run, tmp_path, capsys):
    run_dir, _ = run
    text = tmp_path / "corpus.txt"
    text.write_text(BUNDLED_CORPUS.read_text()[:40_000])
    out = evaluated(capsys, str(run_dir), "--data-path", str(text), "--seq-len", "16", "--test-sequences", "5",
                    "--batch-size", "2", "--device", "cpu")
    assert (out["data"], out["seq_len"], out["test_sequences"], out["test_tokens"], out["batch_size"]) == (
        "corpus", 16, 5, 80, 2)
    assert 5 < out["test_loss"] < 12


def test_a_model_that_knows_nothing_scores_log_vocab(tmp_path, capsys):
    # All-zero weights give equal logits for every token: the loss is ln(50257) exactly.
    d, ctx = 64, 32
    zeros = {"wte.weight": torch.zeros(VOCAB, d), "wpe.weight": torch.zeros(ctx, d),
             "ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
    for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)), ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                        ("attn.c_attn.weight", (d, 3 * d)), ("attn.c_attn.bias", (3 * d,)),
                        ("attn.c_proj.weight", (d, d)), ("attn.c_proj.bias", (d,)),
                        ("mlp.c_fc.weight", (d, 4 * d)), ("mlp.c_fc.bias", (4 * d,)),
                        ("mlp.c_proj.weight", (4 * d, d)), ("mlp.c_proj.bias", (d,))):
        zeros[f"h.0.{name}"] = torch.zeros(shape)
    save_file(zeros, str(tmp_path / "model.safetensors"))
    out = evaluated(capsys, str(tmp_path / "model.safetensors"), "--test-sequences", "3")
    assert out["layout"] == "hf" and out["data"] == "shakespeare" and out["seq_len"] == ctx
    assert out["test_loss"] == pytest.approx(math.log(VOCAB), abs=1e-6)
    assert out["perplexity"] == pytest.approx(VOCAB, rel=1e-5)


def test_export_round_trips_through_the_hf_layout(run, tmp_path, capsys):
    run_dir, result = run
    out_dir = tmp_path / "hf"
    assert export.main([str(run_dir), str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "zero Q/K/V biases" in printed and "tie_word_embeddings=false" in printed
    config = json.loads((out_dir / "config.json").read_text())
    assert (config["n_embd"], config["n_layer"], config["tie_word_embeddings"]) == (32, 1, False)
    native, exported = load_model(run_dir), load_model(out_dir)
    assert exported.layout == "hf" and not exported.model.cfg.qkv_bias
    idx = torch.arange(20).view(1, 20)
    with torch.no_grad():
        assert torch.equal(native.model(idx), exported.model(idx))
    # Same weights, same test set, same batches: the same test loss as the run recorded.
    out = evaluated(capsys, str(out_dir), "--test-sequences", "8", "--batch-size", "2")
    assert out["test_loss"] == result["test_loss"]


def test_export_never_overwrites_by_accident(run, tmp_path, capsys):
    run_dir, _ = run
    out_dir = tmp_path / "hf"
    assert export.main([str(run_dir), str(out_dir)]) == 0
    assert export.main([str(run_dir), str(out_dir)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert export.main([str(run_dir), str(out_dir), "--overwrite"]) == 0
    assert export.main([str(out_dir), str(run_dir), "--overwrite"]) == 2  # into a run folder: never
    assert "is a run folder" in capsys.readouterr().err


def test_generate_greedy_reproduces_the_runs_sample(run, capsys):
    run_dir, _ = run
    assert generate.main([str(run_dir), "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == (run_dir / SAMPLE_FILE).read_text()


def test_generate_sampling_follows_the_seed(run, capsys):
    run_dir, _ = run

    def sample(*flags: str) -> str:
        assert generate.main([str(run_dir), "--prompt", "To be", "--max-new-tokens", "8", *flags]) == 0
        return capsys.readouterr().out

    first = sample("--temperature", "1.5", "--top-k", "1000", "--seed", "1")
    assert first.startswith("To be")
    assert sample("--temperature", "1.5", "--top-k", "1000", "--seed", "1") == first
    assert sample("--temperature", "1.5", "--top-k", "1000", "--seed", "2") != first
    # top-k 1 keeps only the most likely token: sampling becomes greedy.
    assert sample("--top-k", "1", "--seed", "3") == sample()


@pytest.mark.parametrize(("tool", "argv", "message"), [
    (evaluate, ["/no/such/run"], "gptx: error: /no/such/run: no such file or folder"),
    (generate, ["RUN", "--top-k", "0"], "gptx: error: --top-k 0 must be >= 1"),
    (evaluate, ["RUN", "--seq-len", "64"], "gptx: error: --seq-len 64 must be in [1, 32]"),
    (export, ["/no/such/run", "OUT"], "gptx: error: /no/such/run: no such file or folder"),
])
def test_user_errors_are_one_line(run, tmp_path, capsys, tool, argv, message):
    argv = [str(run[0]) if a == "RUN" else str(tmp_path / a) if a == "OUT" else a for a in argv]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("module", ["gptx.evaluate", "gptx.generate", "gptx.export"])
def test_the_commands_run_as_modules(run, tmp_path, module):
    run_dir, _ = run
    args = {"gptx.evaluate": [str(run_dir)], "gptx.generate": [str(run_dir), "--max-new-tokens", "2"],
            "gptx.export": [str(run_dir), str(tmp_path / "hf")]}[module]
    proc = run_gptx(*args, cwd=tmp_path, module=module)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = proc.stdout.splitlines()[0]
    assert {"gptx.evaluate": first.startswith("test_loss "), "gptx.generate": first.startswith("Every effort"),
            "gptx.export": first.startswith("note: ")}[module]


COMMANDS = ("train", "analyze", "reproduce", "compare", "evaluate", "generate", "export", "prepare", "bench", "plan")


def test_the_command_list_is_every_top_level_command():
    """Every `gptx/NAME.py` that runs as `python -m gptx.NAME` is in COMMANDS (so it gets a console script)."""
    runnable = {f.stem for f in (REPO / "gptx").glob("*.py") if '__name__ == "__main__"' in f.read_text()}
    assert runnable == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_a_module_and_a_console_script(name):
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts[f"gptx-{name}"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert importlib.util.find_spec(f"gptx.{name}") is not None  # `python -m gptx.NAME` keeps working

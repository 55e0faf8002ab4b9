"""Every run's weights load: each intervention and every stack the presets use, through every tool.

One tiny sweep trains every arm for one step the way a user would (`python -m gptx.train -m`); then
generate, evaluate, export, compare and reproduce must each succeed on every run folder. Tied runs
(`weight_tying`) are the ones that once could not be read back by name.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_model

from gptx import compare, evaluate, export, generate, reproduce
from gptx.config import CONF_DIR
from gptx.data import BUNDLED_CORPUS
from gptx.files import MODEL_FILE, RESULT_FILE
from gptx.tokenizer import gpt2_tokenizer
from gptx.tools.load import load_model

from conftest import run_gptx

SINGLES = sorted(p.stem for p in (CONF_DIR / "intervention").glob("*.yaml"))


def preset_stacks() -> list[tuple[str, ...]]:
    """The intervention stacks (two or more at once) that the experiment presets set."""
    stacks = set()
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
            value = entry.get("override /intervention") if isinstance(entry, dict) else None
            if isinstance(value, list) and len(value) > 1:
                stacks.add(tuple(value))
    return sorted(stacks)


ARMS = [(s,) for s in SINGLES] + preset_stacks() + [("qkv_bias", "weight_tying")]
TINY_ONE_STEP = ["model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.context_length=32",
                 "train.batch_size=4", "train.max_steps=1", "data.test_sequences=4", "train.sample_tokens=3"]


def arm_key(arm: tuple[str, ...]) -> str:
    return "+".join(sorted(arm))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{arm: run folder} for one sweep over every arm, trained as a user would train it."""
    sweep = tmp_path_factory.mktemp("arms")
    choices = ",".join(a[0] if len(a) == 1 else f"[{','.join(a)}]" for a in ARMS)
    proc = run_gptx("-m", f"intervention={choices}", *TINY_ONE_STEP, f"hydra.sweep.dir={sweep}", cwd=sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {}
    for result in sweep.rglob(RESULT_FILE):
        data = json.loads(result.read_text())
        assert data["status"] == "completed", data
        found["+".join(sorted(data["intervention"]))] = result.parent
    assert set(found) == {arm_key(a) for a in ARMS}
    return found


def test_the_presets_stack_interventions():
    assert preset_stacks(), "no preset stacks interventions: the stack cases below test nothing"


@pytest.mark.slow
@pytest.mark.parametrize("arm", ARMS, ids=arm_key)
def test_every_tool_opens_the_run(arm, runs, tmp_path, capsys):
    run_dir = runs[arm_key(arm)]
    result = json.loads((run_dir / RESULT_FILE).read_text())
    assert generate.main([str(run_dir), "--max-new-tokens", "2"]) == 0
    assert evaluate.main([str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["test_loss"] == result["test_loss"]
    assert export.main([str(run_dir), str(tmp_path / "hf")]) == 0
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["tie_word_embeddings"] is ("weight_tying" in arm)
    assert load_model(tmp_path / "hf").model.cfg.weight_tying is ("weight_tying" in arm)
    assert compare.main([str(run_dir), str(run_dir)]) == 0
    assert reproduce.main([str(run_dir), "--out", str(tmp_path / "again")]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tied_run_stores_the_embedding_by_name(runs):
    with safe_open(str(runs["weight_tying"] / MODEL_FILE), framework="pt") as f:
        names, metadata = set(f.keys()), f.metadata()
    assert "tok_emb.weight" in names and "out_head.weight" not in names
    assert metadata["out_head.weight"] == "tok_emb.weight"


@pytest.mark.slow
def test_tied_files_written_the_old_way_still_load(runs, tmp_path, capsys):
    """Earlier gptx kept the head's name for a tied matrix (safetensors' own choice): still readable."""
    new = load_model(runs["weight_tying"])
    old_file = tmp_path / "old.safetensors"
    with safe_open(str(runs["weight_tying"] / MODEL_FILE), framework="pt") as f:
        metadata = {k: v for k, v in f.metadata().items() if k.startswith("gptx_")}
    save_model(new.model, str(old_file), metadata=metadata)
    with safe_open(str(old_file), framework="pt") as f:
        assert "out_head.weight" in f.keys() and "tok_emb.weight" not in f.keys()
    old = load_model(old_file)
    assert old.model.out_head.weight is old.model.tok_emb.weight
    for name, tensor in new.model.state_dict().items():
        assert torch.equal(tensor, old.model.state_dict()[name]), name
    assert compare.main([str(old_file), str(runs["weight_tying"] / MODEL_FILE)]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["weight_tying", "qkv_bias+weight_tying", "qkv_bias"])
def test_an_export_gives_transformers_the_same_logits(arm, runs, tmp_path):
    transformers = pytest.importorskip("transformers")
    loaded = load_model(runs[arm])
    assert export.main([str(runs[arm]), str(tmp_path)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    tokens = torch.randint(0, loaded.model.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = loaded.model(tokens), hf(tokens).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert hf.config.tie_word_embeddings is ("weight_tying" in arm)


@pytest.mark.slow
def test_an_export_carries_gpt2s_tokenizer_for_transformers(runs, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert export.main([str(runs["baseline"]), str(tmp_path)]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert tokenizer.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    text = BUNDLED_CORPUS.read_text()[:50_000] + " naïve café 東京 🙂 <|endoftext|>"
    assert tokenizer.encode(text) == gpt2_tokenizer().encode(text, allowed_special="all")

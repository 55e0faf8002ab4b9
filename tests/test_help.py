"""`python -m gptx.train --help`: the config groups and every key's default and docstring, from the schema."""

from __future__ import annotations

import dataclasses

from gptx.config import GptxConfig, field_docs

from conftest import run_gptx


def leaf_keys(cls=GptxConfig, prefix=""):
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from leaf_keys(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def test_every_field_has_a_docstring():
    docs = field_docs()
    assert set(docs) == set(leaf_keys())
    assert [key for key, (_, doc) in docs.items() if not doc] == []
    assert docs["train.lr"][0] == 0.0004 and docs["model.init_scheme"][0] == "per_parameter"


def test_help_lists_groups_keys_defaults_and_docstrings(tmp_path):
    proc = run_gptx("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "intervention: baseline, fp32, grad_clip" in out and "logger: mlflow, none, tensorboard, wandb" in out
    assert "  train.grad_clip = null\n" in out and "  model.qkv_bias = false\n" in out
    assert "Dropout on embeddings, attention weights and residual branches." in out
    assert "Hydra (https://hydra.cc)" not in out
    assert not list(tmp_path.iterdir())  # asking for help creates no folder

"""The architecture: exact parameter counts, tying, attention, FLOPs and the two init schemes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptx.config import ConfigError, InitDistribution, InitScheme, ModelConfig
from gptx.hashing import parameter_sha256s, weights_sha256
from gptx.model import GPTModel, build_model, count_parameters, flops_per_token, residual_projections

from conftest import typed_config


def meta_model(preset: str, *overrides: str) -> GPTModel:
    """A full-size model on the meta device: shapes without memory."""
    cfg = typed_config(f"model={preset}", *overrides, tiny=False).model
    with torch.device("meta"):
        return GPTModel(cfg)


@pytest.mark.parametrize(("preset", "overrides", "expected"), [
    ("gpt2_small", [], 163_009_536),
    ("gpt2_small", ["intervention=weight_tying"], 124_412_160),
    ("gpt2_small", ["intervention=qkv_bias"], 163_037_184),
    ("gpt2_small", ["intervention=[qkv_bias,weight_tying]"], 124_439_808),
    ("gpt2_medium", [], 406_212_608),
    ("gpt2_large", [], 838_220_800),
    ("gpt2_xl", [], 1_637_792_000),
])
def test_parameter_counts(preset, overrides, expected):
    assert count_parameters(meta_model(preset, *overrides)) == expected


def test_weight_tying_shares_one_matrix():
    model = build_model(typed_config("intervention=weight_tying").model, init_seed=1)
    assert model.out_head.weight is model.tok_emb.weight
    untied = build_model(typed_config().model, init_seed=1)
    d, v = 32, 50257
    assert count_parameters(untied) - count_parameters(model) == d * v


def test_flops_per_token_gpt2_small():
    # 6 * 123,532,032 matmul weights + 12 * 12 layers * 768 * 1024 tokens = 854.4 MFLOP, tied or not.
    assert flops_per_token(meta_model("gpt2_small"), 1024) == 854_438_400
    assert flops_per_token(meta_model("gpt2_small", "intervention=weight_tying"), 1024) == 854_438_400


def test_attention_matches_explicit_causal_softmax():
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=1, context_length=16, dropout=0.0, qkv_bias=True)
    att = build_model(cfg, init_seed=3).trf_blocks[0].att.eval()
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))
    q, k, v = (w(x).view(2, 16, 4, 8).transpose(1, 2) for w in (att.W_query, att.W_key, att.W_value))
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)
    scores = scores.masked_fill(torch.triu(torch.ones(16, 16, dtype=torch.bool), 1), float("-inf"))
    expected = att.out_proj((F.softmax(scores, -1) @ v).transpose(1, 2).reshape(2, 16, 32))
    torch.testing.assert_close(att(x), expected, rtol=1e-5, atol=1e-6)


def test_per_parameter_init_leaves_shared_parameters_identical():
    base = parameter_sha256s(build_model(typed_config().model, 42))
    for intervention in ("qkv_bias", "weight_tying", "no_dropout", "[qkv_bias,weight_tying]"):
        other = parameter_sha256s(build_model(typed_config(f"intervention={intervention}").model, 42))
        shared = base.keys() & other.keys()
        assert shared and all(base[name] == other[name] for name in shared), intervention
    assert "out_head.weight" not in parameter_sha256s(build_model(typed_config("intervention=weight_tying").model, 42))


def test_sequential_init_shifts_every_later_parameter_like_the_study():
    # sequential draws from the global stream, which train() seeds with init_seed just before.
    torch.manual_seed(42)
    base = parameter_sha256s(build_model(typed_config("model.init_scheme=sequential").model, 42))
    torch.manual_seed(42)
    qkv = parameter_sha256s(build_model(
        typed_config("model.init_scheme=sequential", "intervention=qkv_bias").model, 42))
    assert base["tok_emb.weight"] == qkv["tok_emb.weight"]  # drawn before the first bias
    assert base["trf_blocks.0.att.W_key.weight"] != qkv["trf_blocks.0.att.W_key.weight"]
    assert base["out_head.weight"] != qkv["out_head.weight"]


def test_sequential_init_is_torch_default_construction():
    cfg = typed_config("model.init_scheme=sequential").model
    torch.manual_seed(7)
    reference = GPTModel(cfg)
    torch.manual_seed(7)
    assert weights_sha256(build_model(cfg, init_seed=7)) == weights_sha256(reference)


def test_per_parameter_init_distributions():
    model = build_model(ModelConfig(d_model=256, n_heads=4, n_layers=1, init_scheme=InitScheme.per_parameter), 0)
    emb = model.tok_emb.weight.detach()
    assert abs(emb.mean().item()) < 0.01 and abs(emb.std().item() - 1.0) < 0.01
    w = model.trf_blocks[0].ff.layers[2].weight.detach()  # fan_in 1024 -> U(-1/32, 1/32)
    assert w.abs().max().item() <= 1 / 32 and w.abs().max().item() > 0.99 / 32
    assert torch.equal(model.final_norm.weight, torch.ones(256))
    assert torch.equal(model.final_norm.bias, torch.zeros(256))


def test_per_parameter_build_leaves_global_stream_untouched():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_model(typed_config().model, 5)
    assert torch.equal(torch.rand(3), expected)


def test_bias_false_drops_every_bias_and_leaves_the_other_parameters_as_they_were():
    base = parameter_sha256s(build_model(typed_config().model, 42))
    model = build_model(typed_config("model.bias=false").model, 42)
    unbiased = parameter_sha256s(model)
    assert sorted(base.keys() - unbiased.keys()) == sorted(n for n in base if n.endswith(".bias"))
    assert not [n for n in unbiased if n.endswith("bias")] and all(base[n] == unbiased[n] for n in unbiased)
    # 1 layer, d 32: out_proj 32, the MLP's 128 + 32, two LayerNorms 64, the final LayerNorm 32
    assert count_parameters(build_model(typed_config().model, 42)) - count_parameters(model) == 288
    with pytest.raises(ConfigError, match="model.bias=false .* model.qkv_bias=true"):
        typed_config("model.bias=false", "model.qkv_bias=true")


def test_nanogpt_init_draws_each_parameter_from_its_own_stream():
    cfg = ModelConfig(d_model=256, n_heads=4, n_layers=2, init=InitDistribution.nanogpt)
    model = build_model(cfg, 0)
    default = dict(build_model(ModelConfig(d_model=256, n_heads=4, n_layers=2), 0).named_parameters())
    residual = {name for name, m in model.named_modules() if m in residual_projections(model)}
    assert residual == {f"trf_blocks.{i}.{p}" for i in (0, 1) for p in ("att.out_proj", "ff.layers.2")}
    for name, param in model.named_parameters():
        if name.endswith("bias"):  # Linear and LayerNorm biases alike
            assert torch.equal(param, torch.zeros_like(param)), name
        elif "norm" in name:
            assert torch.equal(param, torch.ones_like(param)), name
        elif name.rsplit(".", 1)[0] in residual:
            assert abs(param.std().item() - 0.02 / math.sqrt(4)) < 5e-4, name
        else:
            assert abs(param.std().item() - 0.02) < 1e-3, name
    # the same normal draws as the embeddings' N(0, 1) under pytorch: one stream per (init_seed, name)
    assert torch.equal(model.tok_emb.weight, 0.02 * default["tok_emb.weight"])
    with pytest.raises(ConfigError, match="model.init=nanogpt needs model.init_scheme=per_parameter"):
        typed_config("model.init=nanogpt", "model.init_scheme=sequential")

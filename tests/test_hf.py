"""The Hugging Face GPT-2 layout: files made by hand load to the same logits, exports round-trip exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from gptx.config import ModelConfig
from gptx.model import GPTModel, build_model
from gptx.tools.hf import HFLayoutError, hf_config, load_hf_model, save_hf, to_hf_state_dict
from gptx.tools.load import load_model

IDX = torch.tensor([[5, 17, 3, 96, 42, 0, 7, 64, 11, 2]])


def small_model(qkv_bias: bool, weight_tying: bool, d_model: int = 32, n_heads: int = 2) -> GPTModel:
    """A 2-layer GPT whose every parameter (LayerNorms included) holds distinct random values."""
    cfg = ModelConfig(name="t", vocab_size=97, context_length=16, d_model=d_model, n_heads=n_heads, n_layers=2,
                      qkv_bias=qkv_bias, weight_tying=weight_tying)
    model = build_model(cfg, init_seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def logits(model: GPTModel) -> torch.Tensor:
    with torch.no_grad():
        return model(IDX)


def hand_made_hf(model: GPTModel, prefix: str = "transformer.", buffers: bool = False) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel's tensors for `model`, written out here independently of gptx.hf."""
    sd, cfg = model.state_dict(), model.cfg
    hf = {f"{prefix}wte.weight": sd["tok_emb.weight"], f"{prefix}wpe.weight": sd["pos_emb.weight"],
          f"{prefix}ln_f.weight": sd["final_norm.weight"], f"{prefix}ln_f.bias": sd["final_norm.bias"]}
    for n in range(cfg.n_layers):
        g, h = (lambda k, n=n: sd[f"trf_blocks.{n}.{k}"]), f"{prefix}h.{n}."
        hf[h + "ln_1.weight"], hf[h + "ln_1.bias"] = g("norm1.weight"), g("norm1.bias")
        hf[h + "ln_2.weight"], hf[h + "ln_2.bias"] = g("norm2.weight"), g("norm2.bias")
        # Conv1D weights are [in, out]: Q, K, V side by side along the output dimension.
        hf[h + "attn.c_attn.weight"] = torch.cat([g(f"att.{p}.weight").T for p in ("W_query", "W_key", "W_value")], 1)
        hf[h + "attn.c_attn.bias"] = torch.cat([g(f"att.{p}.bias") for p in ("W_query", "W_key", "W_value")])
        hf[h + "attn.c_proj.weight"], hf[h + "attn.c_proj.bias"] = g("att.out_proj.weight").T, g("att.out_proj.bias")
        hf[h + "mlp.c_fc.weight"], hf[h + "mlp.c_fc.bias"] = g("ff.layers.0.weight").T, g("ff.layers.0.bias")
        hf[h + "mlp.c_proj.weight"], hf[h + "mlp.c_proj.bias"] = g("ff.layers.2.weight").T, g("ff.layers.2.bias")
        if buffers:  # OpenAI's file carries the causal masks too
            ctx = cfg.context_length
            hf[h + "attn.bias"] = torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx)
            hf[h + "attn.masked_bias"] = torch.tensor(-1e4)
    if not cfg.weight_tying:
        hf["lm_head.weight"] = sd["out_head.weight"]
    return {k: v.contiguous().clone() for k, v in hf.items()}


def hf_reference_logits(hf: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    """GPT-2's forward pass computed straight from HF tensors, Conv1D style (x @ W + b)."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    wte, d = hf["wte.weight"], hf["wte.weight"].shape[1]
    t, hd = IDX.shape[1], d // n_head
    x = wte[IDX] + hf["wpe.weight"][:t]
    mask = torch.ones(t, t).tril().bool()
    for n in range(sum(k.endswith("ln_1.weight") for k in hf)):
        p = lambda k, n=n: hf[f"h.{n}.{k}"]  # noqa: E731
        a = F.layer_norm(x, (d,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
        q, k, v = (a @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(d, dim=-1)
        q, k, v = (z.view(1, t, n_head, hd).transpose(1, 2) for z in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(hd)).masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(1, t, d)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        m = F.layer_norm(x, (d,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
        m = F.gelu(m @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + m @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = F.layer_norm(x, (d,), hf["ln_f.weight"], hf["ln_f.bias"], 1e-5)
    return x @ hf.get("lm_head.weight", wte).T


def write_hf(folder, tensors, config: dict | None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


@pytest.mark.parametrize("weight_tying", [False, True])
def test_a_hand_made_hf_file_gives_the_native_logits(tmp_path, weight_tying):
    model = small_model(qkv_bias=True, weight_tying=weight_tying)
    tensors = hand_made_hf(model)
    # The hand-made file really is GPT-2: HF's own arithmetic on it gives the model's logits.
    torch.testing.assert_close(hf_reference_logits(tensors, n_head=2), logits(model), rtol=1e-5, atol=1e-5)
    path = write_hf(tmp_path, tensors, {"model_type": "gpt2", "n_head": 2, "tie_word_embeddings": weight_tying})
    loaded = load_model(path)
    assert loaded.layout == "hf" and loaded.config is None
    cfg = loaded.model.cfg
    assert (cfg.qkv_bias, cfg.weight_tying, cfg.n_heads, cfg.n_layers, cfg.d_model, cfg.context_length,
            cfg.vocab_size) == (True, weight_tying, 2, 2, 32, 16, 97)
    assert torch.equal(logits(loaded.model), logits(model))
    if weight_tying:
        assert loaded.model.out_head.weight is loaded.model.tok_emb.weight


def test_an_openai_style_file_needs_no_config(tmp_path):
    # OpenAI's release: no `transformer.` prefix, causal-mask buffers, no lm_head, heads of 64.
    model = small_model(qkv_bias=True, weight_tying=True, d_model=128, n_heads=2)
    path = write_hf(tmp_path, hand_made_hf(model, prefix="", buffers=True), config=None)
    loaded = load_model(tmp_path)  # the folder works as well as the file
    assert loaded.weights == path and loaded.model.cfg.n_heads == 2 and loaded.model.cfg.weight_tying
    assert torch.equal(logits(loaded.model), logits(model))


@pytest.mark.parametrize(("qkv_bias", "weight_tying"), [(False, False), (True, True), (True, False)])
def test_export_then_load_gives_identical_logits(tmp_path, qkv_bias, weight_tying):
    model = small_model(qkv_bias, weight_tying)
    notes = save_hf(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    torch.testing.assert_close(hf_reference_logits(tensors, n_head=2), logits(model), rtol=1e-5, atol=1e-5)
    assert ("lm_head.weight" in tensors) == (not weight_tying)
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert tensors["transformer.h.1.attn.c_attn.bias"].any() == qkv_bias  # zeros when the run had none
    assert any("zero Q/K/V biases" in n for n in notes) == (not qkv_bias)
    back = load_hf_model(tmp_path / "model.safetensors")
    assert (back.cfg.qkv_bias, back.cfg.weight_tying) == (qkv_bias, weight_tying)
    assert torch.equal(logits(back), logits(model))


def test_config_json_describes_the_architecture(tmp_path):
    save_hf(small_model(qkv_bias=False, weight_tying=False), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {k: config[k] for k in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size",
                                   "tie_word_embeddings", "layer_norm_epsilon", "activation_function",
                                   "resid_pdrop", "embd_pdrop", "attn_pdrop", "model_type")} == {
        "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 16, "vocab_size": 97,
        "tie_word_embeddings": False, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "model_type": "gpt2"}
    assert config["architectures"] == ["GPT2LMHeadModel"]


def test_gpt2_small_has_gpt2s_tensor_shapes():
    with torch.device("meta"):
        model = GPTModel(ModelConfig(name="gpt2_small", context_length=1024, d_model=768, n_heads=12,
                                     n_layers=12, weight_tying=True))
    tensors, _ = to_hf_state_dict(model)
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (768, 2304)
    assert tensors["transformer.h.0.attn.c_attn.bias"].shape == (2304,)
    assert tensors["transformer.h.0.mlp.c_fc.weight"].shape == (768, 3072)
    assert tensors["transformer.h.0.mlp.c_proj.weight"].shape == (3072, 768)
    assert tensors["transformer.wpe.weight"].shape == (1024, 768) and "lm_head.weight" not in tensors
    assert sum(t.numel() for t in tensors.values()) == 124_439_808  # GPT-2 small as Hugging Face counts it


def test_a_missing_or_unknown_tensor_is_named(tmp_path):
    tensors = hand_made_hf(small_model(qkv_bias=True, weight_tying=False))
    config = {"n_head": 2, "tie_word_embeddings": False}
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    with pytest.raises(HFLayoutError, match=r"h\.1\.mlp\.c_fc\.bias"):
        load_model(write_hf(tmp_path / "missing", tensors, config))
    tensors = hand_made_hf(small_model(qkv_bias=True, weight_tying=False))
    tensors["transformer.h.0.attn.rotary"] = torch.zeros(3)
    with pytest.raises(HFLayoutError, match=r"h\.0\.attn\.rotary"):
        load_model(write_hf(tmp_path / "unknown", tensors, config))


def test_a_config_gptx_cannot_compute_is_refused(tmp_path):
    tensors = hand_made_hf(small_model(qkv_bias=True, weight_tying=False))
    with pytest.raises(HFLayoutError, match="activation_function='relu'"):
        load_model(write_hf(tmp_path, tensors, {"n_head": 2, "activation_function": "relu"}))


def test_an_architecture_hf_cannot_compute_is_not_exported(tmp_path):
    model = small_model(qkv_bias=False, weight_tying=False)
    model.trf_blocks[0].ff.layers[1] = nn.GELU()  # exact GELU: HF GPT-2 has only the tanh one
    with pytest.raises(HFLayoutError, match="tanh GELU"):
        save_hf(model, tmp_path)
    model = small_model(qkv_bias=False, weight_tying=False)
    model.register_parameter("gate", nn.Parameter(torch.zeros(1)))
    with pytest.raises(HFLayoutError, match="no place in HF GPT-2 for gate"):
        save_hf(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_hf_config_follows_the_model():
    config = hf_config(ModelConfig(dropout=0.0, weight_tying=True))
    assert (config["resid_pdrop"], config["tie_word_embeddings"], config["n_positions"]) == (0.0, True, 128)

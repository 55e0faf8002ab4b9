"""Components by name: gptx's own are the defaults bit for bit, plugins come from entry points, runs pin them."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest
import torch

from gptx import components
from gptx.config import ConfigError, config_sha256, to_plain_dict
from gptx.model import FeedForward, GPTModel, adamw_2d_decay, build_model
from gptx.schedule import lr_at

from conftest import REPO, typed_config

EXAMPLE = REPO / "examples" / "gptx-swiglu"


@pytest.fixture
def example_plugin(monkeypatch):
    """The example plugin's components registered in this process, read from its source folder."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "gptx_swiglu", raising=False)
    eps = (EntryPoint("mlp.swiglu", "gptx_swiglu:SwiGLU", components.GROUP),
           EntryPoint("norm.rms_norm", "gptx_swiglu:RMSNorm", components.GROUP))
    monkeypatch.setattr(components, "_installed", lambda: eps)
    return eps


def test_every_extension_point_defaults_to_gptx_own():
    cfg = typed_config()
    assert components.selected(cfg.model, cfg.train) == {
        "mlp": "gelu_mlp", "attention": "multi_head", "norm": "layer_norm", "position": "learned",
        "optimizer": "adamw", "lr_schedule": "constant"}
    model = build_model(cfg.model, cfg.init_seed)
    assert isinstance(model.trf_blocks[0].ff, FeedForward)
    assert isinstance(model.trf_blocks[0].norm1, torch.nn.LayerNorm)
    # the parameter names (and so the per-parameter init and checkpoints) are the ones gptx always had
    assert [n for n, _ in model.named_parameters()][:3] == ["tok_emb.weight", "pos_emb.weight",
                                                            "trf_blocks.0.att.W_query.weight"]


def test_component_keys_at_their_default_leave_config_sha256_as_before():
    plain = to_plain_dict(typed_config())
    older = {**plain, "model": {k: v for k, v in plain["model"].items()
                                if k not in ("mlp", "attention", "norm", "position")},
             "train": {k: v for k, v in plain["train"].items() if k != "optimizer"}}
    assert config_sha256(plain) == config_sha256(older)
    assert config_sha256(to_plain_dict(typed_config("model.position=none"))) != config_sha256(plain)


@pytest.mark.parametrize("key, kind", [("model.mlp", "mlp"), ("model.attention", "attention"),
                                       ("model.norm", "norm"), ("model.position", "position")])
def test_an_unknown_name_is_one_line_listing_what_is_registered(key, kind):
    cfg = typed_config(f"{key}=nope")
    with pytest.raises(ConfigError) as err:
        build_model(cfg.model, cfg.init_seed)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{key}=nope is not a registered {kind}: this installation has ")
    assert all(name in message for name in components.registered(kind))


def test_unknown_optimizer_and_schedule_are_refused_too():
    cfg = typed_config("train.optimizer=lion", "train.lr_schedule=wsd")
    with pytest.raises(ConfigError, match="train.optimizer=lion is not a registered optimizer: .*adamw"):
        components.used(cfg.model, cfg.train)
    with pytest.raises(ConfigError, match="train.lr_schedule=wsd is not a registered lr_schedule: "
                       "this installation has constant, cosine "):
        lr_at(0, 10, cfg.train)


def test_no_position_encoding_drops_the_embedding_and_nothing_else():
    base, nope = typed_config(), typed_config("model.position=none")
    a, b = build_model(base.model, 3).state_dict(), build_model(nope.model, 3).state_dict()
    assert set(a) - set(b) == {"pos_emb.weight"} and set(b) <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_keys_added_for_nanogpts_recipe_at_their_default_leave_config_sha256_as_before():
    plain = to_plain_dict(typed_config())
    older = {**plain, "model": {k: v for k, v in plain["model"].items() if k not in ("init", "bias")},
             "data": {k: v for k, v in plain["data"].items() if k != "order"}}
    assert config_sha256(plain) == config_sha256(older)
    for key in ("model.bias=false", "model.init=nanogpt", "data.order=random_offsets"):
        assert config_sha256(to_plain_dict(typed_config(key, "data_seed=1"))) != config_sha256(
            to_plain_dict(typed_config("data_seed=1"))), key


def test_exact_gelu_mlp_differs_from_gelu_mlp_only_in_the_gelu():
    base = build_model(typed_config().model, 3)
    exact = build_model(typed_config("model.mlp=gelu_exact_mlp").model, 3)
    a, b = base.state_dict(), exact.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    ff, layers = exact.trf_blocks[0].ff, base.trf_blocks[0].ff.layers
    assert torch.equal(ff(x), layers[2](torch.nn.functional.gelu(layers[0](x))))
    assert not torch.equal(ff(x), base.trf_blocks[0].ff(x))


def test_adamw_2d_decay_decays_matrices_and_embeddings_only():
    cfg = typed_config("train.optimizer=adamw_2d_decay", "train.lr=0.1", "train.weight_decay=0.5")
    model = build_model(cfg.model, 3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = adamw_2d_decay(model, cfg.train)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's own update is then 0: only the decay moves a parameter
    optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name] * (1 - 0.1 * 0.5 if p.dim() >= 2 else 1.0)), name
    assert {n for n, p in model.named_parameters() if p.dim() < 2} >= {"trf_blocks.0.norm1.weight",
                                                                       "trf_blocks.0.ff.layers.0.bias"}


def test_a_plugin_is_selected_by_name_and_recorded_with_its_source_hash(example_plugin):
    cfg = typed_config("model.mlp=swiglu", "model.norm=rms_norm")
    model = build_model(cfg.model, cfg.init_seed)
    assert type(model.trf_blocks[0].ff).__name__ == "SwiGLU"
    assert type(model.final_norm).__name__ == "RMSNorm"
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, cfg.model.vocab_size)
    used = components.used(cfg.model, cfg.train)
    assert used["mlp.swiglu"]["object"] == "gptx_swiglu:SwiGLU"
    assert used["mlp.swiglu"]["source_sha256"] == components.source_sha256(type(model.trf_blocks[0].ff))
    assert used["attention.multi_head"]["distribution"] == "gptx"
    assert components.registered("mlp") == ["gelu_mlp", "gelu_exact_mlp", "swiglu"]
    assert components.differences(used) == []


def test_parameters_a_plugin_shares_with_the_baseline_start_bit_identical(example_plugin):
    base = build_model(typed_config().model, 5)
    plugged = build_model(typed_config("model.mlp=swiglu", "model.norm=rms_norm").model, 5)
    a, b = dict(base.named_parameters()), dict(plugged.named_parameters())
    shared = set(a) & set(b)
    assert {"tok_emb.weight", "trf_blocks.0.att.W_query.weight", "trf_blocks.0.norm1.weight"} <= shared
    assert all(torch.equal(a[n], b[n]) for n in shared)
    assert "trf_blocks.0.ff.gate.weight" in b and "trf_blocks.0.norm1.bias" not in b
    # the plugin's own Linear layers get gptx's Linear rule from their own (init_seed, name) streams
    gate = b["trf_blocks.0.ff.gate.weight"]
    assert gate.abs().max() <= 1 / 32 ** 0.5 and not torch.equal(gate, b["trf_blocks.0.ff.up.weight"][: len(gate)])


def test_a_module_without_an_init_rule_is_refused_with_the_fix():
    class Scale(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(cfg.d_model))

        def forward(self, x):
            return x * self.gain

    from gptx import model as model_module

    cfg = typed_config()
    original = GPTModel.__init__

    def patched(self, c):
        original(self, c)
        self.final_norm = Scale(c)

    try:
        GPTModel.__init__ = patched
        with pytest.raises(TypeError, match="give Scale an init_parameter"):
            model_module.build_model(cfg.model, 1)
    finally:
        GPTModel.__init__ = original


def test_two_providers_of_one_name_are_refused(monkeypatch):
    eps = (EntryPoint("mlp.swiglu", "a:SwiGLU", components.GROUP),
           EntryPoint("mlp.swiglu", "b:SwiGLU", components.GROUP),
           EntryPoint("mlp.gelu_mlp", "c:MLP", components.GROUP))
    monkeypatch.setattr(components, "_installed", lambda: eps)
    with pytest.raises(ConfigError, match="model.mlp=swiglu is registered by several packages"):
        components.load("mlp", "swiglu")
    with pytest.raises(ConfigError, match="model.mlp=gelu_mlp is gptx's own, but c:MLP registers it too"):
        components.load("mlp", "gelu_mlp")


def test_a_changed_source_is_named(example_plugin):
    cfg = typed_config("model.mlp=swiglu")
    recorded = components.used(cfg.model, cfg.train)
    recorded["mlp.swiglu"]["source_sha256"] = "0" * 64
    (line,) = components.differences(recorded)
    assert line.startswith("mlp.swiglu from gptx_swiglu:SwiGLU None: source sha256 ")
    assert "is not the run's 000000000000…" in line

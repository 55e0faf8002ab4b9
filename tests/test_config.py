"""Composition: every option loads, every intervention changes exactly what it names, bad input fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError

from gptx.config import CONF_DIR, ConfigError, config_sha256, from_dictconfig, to_plain_dict

from conftest import compose_config, typed_config

GROUP_OPTIONS = [(p.parent.name, p.stem) for p in sorted(CONF_DIR.glob("*/*.yaml"))]
INTERVENTIONS = sorted(p.stem for p in (CONF_DIR / "intervention").glob("*.yaml"))

# What each intervention must change relative to the baseline, and nothing else.
EXPECTED_CHANGES = {
    "baseline": {},
    "grad_clip": {"train.grad_clip": 3.5},
    "no_dropout": {"model.dropout": 0.0},
    "qkv_bias": {"model.qkv_bias": True},
    "lr_schedule": {"train.lr": 0.0014, "train.lr_schedule": "cosine"},
    "weight_decay": {"train.weight_decay": 0.01},
    "weight_decay_cerebras": {"train.weight_decay": 0.33724},
    "weight_tying": {"model.weight_tying": True},
    "fp32": {"train.amp": False, "train.tf32": False},
}


def flat(cfg) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(to_plain_dict(cfg), "")
    return out


@pytest.mark.parametrize(("group", "option"), [g for g in GROUP_OPTIONS if g[0] in ("model", "data", "intervention")])
def test_every_option_composes(group, option):
    needs_path = group == "data" and "path: ???" in (CONF_DIR / "data" / f"{option}.yaml").read_text()
    extra = ["data.path=/tmp"] if needs_path else []
    cfg = typed_config(f"{group}={option}", *extra)
    if group == "model":
        assert cfg.model.name == option


def test_interventions_listed_are_the_studys():
    assert set(INTERVENTIONS) == set(EXPECTED_CHANGES)


@pytest.mark.parametrize("name", INTERVENTIONS)
def test_intervention_changes_exactly_what_it_names(name):
    base, other = flat(compose_config()), flat(compose_config(f"intervention={name}"))
    changed = {k: other[k] for k in other if k in base and other[k] != base[k] and not k.startswith("intervention")}
    assert changed == EXPECTED_CHANGES[name]
    typed = typed_config(f"intervention={name}")
    assert typed.intervention_names == [name]
    assert (config_sha256(to_plain_dict(compose_config(f"intervention={name}")))
            != config_sha256(to_plain_dict(compose_config()))) == (name != "baseline")


def test_interventions_stack_and_apply_on_top_of_the_model_preset():
    cfg = typed_config("model=gpt2_small", "intervention=[grad_clip,qkv_bias,no_dropout]", tiny=False)
    assert (cfg.train.grad_clip, cfg.model.qkv_bias, cfg.model.dropout) == (3.5, True, 0.0)
    assert cfg.intervention_names == ["grad_clip", "qkv_bias", "no_dropout"]
    assert cfg.arm == "grad_clip+no_dropout+qkv_bias"
    assert typed_config("intervention=[no_dropout,qkv_bias,grad_clip]").arm == cfg.arm


def test_lr_schedule_values_are_the_studys():
    t = typed_config("intervention=lr_schedule").train
    assert (t.lr, t.warmup_fraction, t.warmup_start_factor, t.min_lr_factor) == (0.0014, 0.05, 1e-5, 0.1)


def test_baseline_is_the_studys_training_setup():
    cfg = typed_config(tiny=False)
    t = cfg.train
    assert (t.lr, t.weight_decay, t.grad_clip) == (0.0004, 0.1, None)
    assert (t.amp, t.amp_dtype.value, t.tf32) == (True, "bf16", True)
    m = cfg.model
    assert (m.name, m.dropout, m.qkv_bias, m.weight_tying) == ("gpt2_tiny", 0.1, False, False)
    assert (cfg.init_seed, cfg.train_seed, cfg.data_seed) == (42, None, None)
    assert cfg.intervention_names == ["baseline"]


def test_an_undone_intervention_is_an_error():
    with pytest.raises(ConfigError, match="intervention 'lr_schedule' sets train.lr=0.0014"):
        typed_config("intervention=lr_schedule", "train.lr=0.001")
    with pytest.raises(ConfigError, match="weight_decay"):
        typed_config("intervention=[weight_decay,weight_decay_cerebras]")


def test_unknown_intervention_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_config("intervention=grad_clipp")
    assert "grad_clip" in str(err.value) and "qkv_bias" in str(err.value)


def test_misspelt_key_fails_loudly():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train.lrr=0.1")
    assert isinstance(err.value.__cause__, ConfigKeyError) or "lrr" in str(err.value)


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=-0.1", "train.lr=-0.1 must be > 0"),
    ("train.batch_size=0", "train.batch_size=0 must be > 0"),
    ("train.micro_batch_size=3", "must divide train.batch_size=4"),
    ("train.seq_len=64", "longer than the model's context"),
    ("model.n_heads=3", "divisible by model.n_heads=3"),
    ("model.dropout=1.5", "model.dropout=1.5 must be in"),
    ("train.tokens=null", None),  # max_steps still bounds the run: fine
    ("init_seed=-1", "init_seed=-1 must be in"),
])
def test_nonsense_values_are_refused_with_the_setting_named(override, message):
    if message is None:
        typed_config(override)
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        typed_config(override)


def test_config_sha256_ignores_filing_keys_only():
    base = config_sha256(to_plain_dict(compose_config()))
    assert config_sha256(to_plain_dict(compose_config("sweep=abc", "overwrite=true"))) == base
    assert config_sha256(to_plain_dict(compose_config("init_seed=43"))) != base
    # How often a run checkpoints changes no number: resuming with another value must still work.
    assert config_sha256(to_plain_dict(compose_config("train.checkpoint_every=7"))) == base


def test_configs_ship_inside_the_package():
    assert (CONF_DIR / "config.yaml").is_file()
    assert Path(CONF_DIR).parent.name == "gptx"


@pytest.mark.parametrize(("override", "key"), [("+train.foo=1", "train.foo"), ("+bar=2", "bar"),
                                               ("+model.extra.deep=3", "model.extra")])
def test_keys_outside_the_schema_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^unknown key {key}: not in gptx's config schema"):
        typed_config(override)


@pytest.mark.parametrize("key", ["train.lr", "train.weight_decay", "train.min_lr_factor", "train.warmup_start_factor",
                                 "train.grad_clip", "train.checkpoint_minutes", "model.dropout",
                                 "data.val_fraction", "train.beta1"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key}=") as caught:
        typed_config(f"{key}={value}")
    assert "\n" not in str(caught.value)


def test_a_retired_key_is_dropped_not_refused():
    cfg = compose_config("+train.fail_at_step=3")
    assert typed_config().train == from_dictconfig(cfg).train

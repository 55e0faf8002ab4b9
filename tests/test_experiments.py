"""The study as presets: the full-size ones resolve to its exact numbers, every intervention applies on
top of every preset, the sweeps run what the study ran, and the miniature sweep trains on a CPU; the
peer check is nanoGPT's CPU recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gptx.config import (
    CONF_DIR,
    ConfigError,
    GptxConfig,
    flatten,
    from_dictconfig,
    intervention_settings,
    normalize_overrides,
    to_plain_dict,
)
from gptx.model import GPTModel, build_model, count_parameters
from gptx.schedule import lr_at, total_steps

from conftest import TINY, run_gptx

EXPERIMENT_DIR = CONF_DIR / "experiment"
# Peer checks reproduce another project's recipe, not the study's set-up (they may set intervention keys).
PEER_CHECKS = ["nanogpt_shakespeare_char_cpu", "nanogpt_shakespeare_char_cpu_parity"]
EXPERIMENTS = sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml") if p.stem not in PEER_CHECKS)
FULL_SIZE = [name for name in EXPERIMENTS if not name.endswith("_miniature")]
INTERVENTIONS = sorted(p.stem for p in (CONF_DIR / "intervention").glob("*.yaml"))
STUDY_ARMS = ["baseline", "grad_clip", "no_dropout", "qkv_bias", "lr_schedule", "weight_decay",
              "weight_decay_cerebras", "weight_tying", "fp32"]
WINNERS = ["grad_clip", "no_dropout", "qkv_bias", "lr_schedule", "weight_decay"]
# The study's noise runs as (init_seed, train_seed).
NOISE_RUNS = {(42, None), (22, None), (67, None), (42, 23), (42, 67), (22, 23), (67, 23)}
SEEDS = (22, 42, 67)
MINIATURE_STEPS = 3000
# What each sweep preset must run, as (arm, init_seed, train_seed).
SWEEPS = {
    "interventions": {(arm, 42, None) for arm in STUDY_ARMS},
    "interventions_paired": {(arm, seed, None) for arm in STUDY_ARMS for seed in SEEDS},
    "noise": {("baseline", init, train) for init, train in NOISE_RUNS},
    "noise_grid": {("baseline", init, train) for init in SEEDS for train in (None, 23, 67)},
}


def preset_overrides(name: str, *overrides: str) -> list[str]:
    """`+experiment=name` as a user types it; full-size presets read token files, so they need a path."""
    data = [] if name.endswith("_miniature") or name in PEER_CHECKS else ["data.path=/data/fineweb10B"]
    return [f"+experiment={name}", *data, *overrides]


def compose_preset(name: str, *overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=normalize_overrides(preset_overrides(name, *overrides)),
                       return_hydra_config=hydra)


def typed_preset(name: str, *overrides: str) -> GptxConfig:
    return from_dictconfig(compose_preset(name, *overrides))


def sweep_jobs(name: str) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper launches for `-m +experiment=name`."""
    params = compose_preset(name, hydra=True).hydra.sweeper.params
    lines = [f"{key}={value}" for key, value in params.items()] + preset_overrides(name)
    overrides = OverridesParser.create().parse_overrides(lines)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def meta_parameters(cfg: GptxConfig) -> int:
    with torch.device("meta"):
        return count_parameters(GPTModel(cfg.model))


def test_the_sweeps_cover_every_intervention_gptx_has():
    assert sorted(STUDY_ARMS) == INTERVENTIONS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_composes(name):
    cfg = typed_preset(name)
    assert cfg.model.name == ("gpt2_miniature" if name.endswith("_miniature") else "gpt2_small")


def test_the_baseline_preset_is_the_studys_set_up():
    cfg = typed_preset("gpt2_small_chinchilla")
    m, d, t = cfg.model, cfg.data, cfg.train
    assert (m.vocab_size, m.context_length, m.d_model, m.n_heads, m.n_layers) == (50257, 1024, 768, 12, 12)
    assert (m.dropout, m.qkv_bias, m.weight_tying) == (0.1, False, False)
    assert meta_parameters(cfg) == 163_009_536
    assert (d.format.value, d.path, d.test_sequences) == ("tokens", "/data/fineweb10B", 3200 * 6)
    seq_len = t.seq_len or m.context_length
    assert (t.tokens, t.batch_size, t.micro_batch_size, seq_len) == (3_260_190_720, 96, 12, 1024)
    assert t.tokens == 20 * 163_009_536
    assert total_steps(t, t.batch_size * seq_len) == 33_165
    assert (t.eval_every, t.eval_batches) == (617, 300)
    assert (t.lr, t.lr_schedule, t.weight_decay, t.grad_clip) == (0.0004, "constant", 0.1, None)
    assert (t.beta1, t.beta2) == (0.9, 0.999)  # torch's AdamW defaults, as the study used
    assert (t.amp, t.amp_dtype.value, t.tf32) == (True, "bf16", True)
    assert (cfg.init_seed, cfg.train_seed, cfg.data_seed) == (42, None, None)
    assert cfg.intervention_names == ["baseline"]


def test_the_lr_schedule_intervention_on_the_baseline_preset():
    t = typed_preset("gpt2_small_chinchilla", "intervention=lr_schedule").train
    steps = total_steps(t, 96 * 1024)
    warmup = int(steps * 0.05)
    assert (t.lr, t.lr_schedule, warmup) == (0.0014, "cosine", 1658)
    assert lr_at(0, steps, t) == pytest.approx(0.0014 * 1e-5)
    assert lr_at(warmup, steps, t) == pytest.approx(0.0014)
    assert lr_at(steps - 1, steps, t) == pytest.approx(0.00014)


def test_best_stacks_the_studys_winners():
    cfg = typed_preset("best")
    assert cfg.arm == "+".join(sorted(WINNERS))
    t, m = cfg.train, cfg.model
    assert (t.grad_clip, m.dropout, m.qkv_bias, t.lr, t.lr_schedule, t.weight_decay) == (
        3.5, 0.0, True, 0.0014, "cosine", 0.01)
    assert meta_parameters(cfg) == 163_009_536 + 12 * 3 * 768  # QKV biases
    assert meta_parameters(typed_preset("gpt2_small_chinchilla", "intervention=weight_tying")) == 124_412_160


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_intervention_applies_on_top_of_every_preset(name):
    jobs = [preset_overrides(name, f"intervention={intervention}") for intervention in INTERVENTIONS]
    for intervention, composed in zip(INTERVENTIONS, _compose(*jobs), strict=True):
        cfg = from_dictconfig(composed)  # raises if the preset undid the intervention
        flat = flatten(OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True))
        for key, wanted in intervention_settings(intervention).items():
            assert flat[key] == wanted, (name, intervention, key)
        assert cfg.intervention_names == [intervention]


def test_presets_leave_every_intervention_key_alone():
    # `+experiment` merges after the intervention group: a key set here would undo the intervention.
    intervention_keys = {key for name in INTERVENTIONS for key in intervention_settings(name)}
    for path in sorted(EXPERIMENT_DIR.rglob("*.yaml")):
        if path.stem in PEER_CHECKS:
            continue
        values = OmegaConf.to_container(OmegaConf.load(path))
        values = {k: v for k, v in values.items() if k not in ("defaults", "hydra")}
        clash = sorted(set(flatten(values)) & intervention_keys)
        assert not clash, f"{path.name} sets {clash}, which interventions set: leave them to the schema"


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_presets_run_what_the_study_ran(name):
    for variant in (name, f"{name}_miniature"):
        jobs = sweep_jobs(variant)
        runs = {(cfg.arm, cfg.init_seed, cfg.train_seed) for cfg in map(from_dictconfig, _compose(*jobs))}
        assert len(jobs) == len(SWEEPS[name]) and runs == SWEEPS[name], variant
        assert compose_preset(variant).sweep == variant


@pytest.mark.parametrize("name", FULL_SIZE)
def test_every_preset_has_a_miniature_that_runs_on_a_cpu(name):
    full, mini = compose_preset(name, hydra=True), compose_preset(f"{name}_miniature", hydra=True)
    assert mini.hydra.sweeper.params == full.hydra.sweeper.params
    assert list(mini.intervention) == list(full.intervention)
    cfg = typed_preset(f"{name}_miniature")
    assert cfg.data.name == "shakespeare_char" and cfg.data.path is None  # the bundled corpus, by character
    assert cfg.model.vocab_size == 65 and meta_parameters(cfg) < 1_000_000
    assert total_steps(cfg.train, cfg.train.batch_size * cfg.model.context_length) == MINIATURE_STEPS


def test_the_miniature_baseline_is_the_studys_recipe():
    cfg = typed_preset("gpt2_small_chinchilla_miniature")
    t, m = cfg.train, cfg.model
    assert (t.lr, t.lr_schedule, t.weight_decay, t.grad_clip, m.dropout) == (0.0004, "constant", 0.1, None, 0.1)
    assert (m.qkv_bias, m.weight_tying, cfg.intervention_names) == (False, False, ["baseline"])
    assert (m.n_layers, m.n_heads, m.d_model, m.context_length, meta_parameters(cfg)) == (2, 4, 192, 64, 926_208)


def test_the_peer_check_is_nanogpts_cpu_recipe():
    cfg = typed_preset("nanogpt_shakespeare_char_cpu")
    m, t = cfg.model, cfg.train
    assert (cfg.data.name, m.vocab_size, m.context_length, m.n_layers, m.n_heads, m.d_model, m.dropout) == (
        "shakespeare_char", 65, 64, 4, 4, 128, 0.0)
    assert (t.batch_size, t.seq_len or m.context_length, total_steps(t, 12 * 64)) == (12, 64, 2000)
    assert (t.lr, t.beta1, t.beta2, t.weight_decay, t.grad_clip) == (1e-3, 0.9, 0.99, 0.1, 1.0)
    assert (cfg.init_seed, cfg.data_seed) == (1337, 1337)

    def nanogpt_lr(step: int) -> float:  # linear warm-up over 100 steps, cosine to 1e-4 at step 2000
        if step < 100:
            return 1e-3 * (step + 1) / 101
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * (step - 100) / 1900)) * (1e-3 - 1e-4)

    assert all(abs(lr_at(step, 2000, t) - nanogpt_lr(step)) < 1e-12 for step in range(100))
    assert max(abs(lr_at(step, 2000, t) - nanogpt_lr(step)) for step in range(2000)) < 5e-7


def test_the_parity_preset_is_the_peer_check_on_nanogpts_architecture_and_batches():
    base, parity = typed_preset("nanogpt_shakespeare_char_cpu"), typed_preset("nanogpt_shakespeare_char_cpu_parity")
    a, b = flatten(to_plain_dict(base)), flatten(to_plain_dict(parity))
    assert {k: b[k] for k in a if a[k] != b[k]} == {
        "model.name": "nanogpt_char_4x128", "model.bias": False, "model.mlp": "gelu_exact_mlp",
        "model.weight_tying": True, "model.init": "nanogpt", "train.optimizer": "adamw_2d_decay",
        "data.order": "random_offsets"}
    model = build_model(parity.model, parity.init_seed)
    # nanoGPT's model.py: 804,096 parameters, of which it reports 795,904 ("0.80M"), the 64 x 128 position
    # embeddings left out; gptx's peer check has 816,640 (biases, and an untied 65 x 128 head)
    assert (count_parameters(model), count_parameters(model) - model.pos_emb.weight.numel()) == (804_096, 795_904)
    assert meta_parameters(base) == 816_640 == 804_096 + 65 * 128 + 33 * 128  # + the untied head, + 33 x 128 biases
    assert model.out_head.weight is model.tok_emb.weight and not [n for n, _ in model.named_parameters()
                                                                  if n.endswith("bias")]


def test_the_parity_preset_runs(tmp_path):
    proc = run_gptx("+experiment=nanogpt_shakespeare_char_cpu_parity", "train.max_steps=2", "train.eval_batches=1",
                    "data.test_sequences=12", "train.sample_tokens=3", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert {"mlp.gelu_exact_mlp", "optimizer.adamw_2d_decay"} <= set(result["components"])
    assert math.isfinite(result["test_loss"])


def test_an_intervention_the_peer_check_overrides_is_refused():
    with pytest.raises(ConfigError, match="intervention 'grad_clip' sets train.grad_clip=3.5 but"):
        typed_preset("nanogpt_shakespeare_char_cpu", "intervention=grad_clip")
    assert typed_preset("nanogpt_shakespeare_char_cpu", "intervention=qkv_bias").model.qkv_bias


def test_a_noise_seed_pair_wins_over_the_preset_whatever_the_order():
    # Hydra puts the sweeper's parameters before the command line's overrides.
    for order in (("+experiment/noise_run=init22_train23", "+experiment=noise_miniature"),
                  ("+experiment=noise_miniature", "+experiment/noise_run=init22_train23")):
        cfg = from_dictconfig(_compose(list(order))[0])
        assert (cfg.init_seed, cfg.train_seed) == (22, 23)


@pytest.mark.slow
def test_the_miniature_interventions_sweep_completes_nine_runs(tmp_path):
    proc = run_gptx("-m", "+experiment=interventions_miniature", *TINY, "train.max_steps=2",
                    "hydra/launcher=basic", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    paths = sorted((tmp_path / "multirun_outputs" / "interventions_miniature").rglob("result.json"))
    results = [json.loads(p.read_text()) for p in paths]
    assert sorted(r["arm"] for r in results) == sorted(STUDY_ARMS)
    # The preset sweeps the intervention; the command line's single values are left out of the folder names.
    assert sorted(p.parent.name for p in paths) == sorted(f"intervention={r['arm']}" for r in results)
    assert all(r["status"] == "completed" and r["steps"] == 2 and math.isfinite(r["test_loss"]) for r in results)


@pytest.mark.slow
def test_the_miniature_noise_sweep_runs_the_studys_seed_pairs(tmp_path):
    proc = run_gptx("-m", "+experiment=noise_miniature", *TINY, "train.max_steps=1", "hydra/launcher=basic",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "noise_miniature"
    results = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
    assert len(results) == 7 and all(r["status"] == "completed" for r in results)
    assert {(r["init_seed"], r["train_seed"]) for r in results} == NOISE_RUNS
    # Same init seed, same initial weights, whatever the train seed.
    by_init = {}
    for r in results:
        by_init.setdefault(r["init_seed"], set()).add(r["init_weights_sha256"])
    assert all(len(hashes) == 1 for hashes in by_init.values()) and len(by_init) == 3


def _compose(*jobs: list[str]) -> list:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [compose(config_name="config", overrides=normalize_overrides(job)) for job in jobs]


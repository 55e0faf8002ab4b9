"""Reading a saved run config: exactly the config that ran, and nothing a hostile file could make run."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import save_file

from gptx.config import ConfigError
from gptx.saved_config import MAX_YAML_BYTES, hydra_yaml_report, load_run_config, pickle_files

from conftest import Bomb, compose_config, typed_config


def saved_config(*overrides: str) -> dict:
    """The config as gptx's entry point saves it in .hydra/config.yaml, as plain data."""
    return yaml.safe_load(OmegaConf.to_yaml(compose_config(*overrides)))


def write_run(run_dir: Path, config: dict | str) -> Path:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    (run_dir / ".hydra" / "config.yaml").write_text(text)
    return run_dir


def rejection(run_dir: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_run_config(run_dir, warn=lambda message: None)
    message = str(err.value)
    assert "\n" not in message
    return message




def test_saved_config_reads_back_as_the_config_that_ran(tmp_path):
    overrides = ("intervention=[grad_clip,qkv_bias]", "init_seed=7", "train_seed=8", "data_seed=9")
    run_dir = write_run(tmp_path, OmegaConf.to_yaml(compose_config(*overrides)))
    assert load_run_config(run_dir) == typed_config(*overrides)


def test_falls_back_to_the_weights_metadata_without_a_hydra_folder(tmp_path):
    text = OmegaConf.to_yaml(compose_config("init_seed=5"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"), metadata={"gptx_config": text})
    assert load_run_config(tmp_path) == typed_config("init_seed=5")


def test_a_folder_without_any_saved_config_is_an_error(tmp_path):
    assert "has no .hydra/config.yaml" in rejection(tmp_path)


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.update({"_target_": "os.system"}), "key '_target_' is not allowed"),
    (lambda c: c["model"].update({"_target_": "os.system"}), "key 'model._target_' is not allowed"),
    (lambda c: c.update({"hydra": {"callbacks": {"x": {"_target_": "evil.Cb"}}}}), "key 'hydra' is not allowed"),
    (lambda c: c.update({"hydra": {"launcher": {"setup": ["curl x | sh"]}}}), "key 'hydra' is not allowed"),
    (lambda c: c.update({"hydra": {"job": {"env_set": {"LD_PRELOAD": "/tmp/x.so"}}}}), "key 'hydra' is not allowed"),
    (lambda c: c.update({"defaults": ["/etc/passwd"]}), "key 'defaults' is not allowed"),
    (lambda c: c["train"].update({"trian_lr": 0.1}), "unknown key 'train.trian_lr'"),
    (lambda c: c.update({"optimizer": {"lr": 0.1}}), "unknown key 'optimizer'"),
    (lambda c: c["train"].update({"lr": "${oc.env:SECRET}"}), "train.lr holds an interpolation"),
    (lambda c: c["data"].update({"path": "${oc.decode:x}"}), "data.path holds an interpolation"),
    (lambda c: c["intervention"].update({"../../../tmp/evil": "x"}), "unknown intervention '../../../tmp/evil'"),
    (lambda c: c["intervention"].update({"baseline": "${oc.env:SECRET}"}), "intervention.baseline holds"),
    (lambda c: c["train"].update({"lr": [0.1]}), "train.lr must be a plain value, got list"),
    (lambda c: c.update({"model": "gpt2_xl"}), "model must be a mapping"),
])
def test_hostile_or_foreign_keys_are_rejected(tmp_path, edit, expected):
    config = saved_config()
    edit(config)
    assert expected in rejection(write_run(tmp_path, config))


def test_an_interpolation_never_resolves_or_leaks_the_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET", "hunter2")
    config = saved_config()
    config["data"]["path"] = "${oc.env:SECRET}"
    message = rejection(write_run(tmp_path, config))
    assert "hunter2" not in message and "SECRET" not in message


def test_yaml_tags_that_would_run_code_are_rejected(tmp_path):
    marker = tmp_path / "marker"
    text = OmegaConf.to_yaml(compose_config()) + f'replica: !!python/object/apply:os.system ["touch {marker}"]\n'
    assert "not plain YAML data" in rejection(write_run(tmp_path, text))
    assert not marker.exists()


@pytest.mark.parametrize("text, expected", [
    ("model: &m {d_model: 32}\ndata: *m\n", "aliases"),
    ("init_seed: 1\ninit_seed: 2\n", "duplicate key 'init_seed'"),
    ("- a\n- b\n", "expected a mapping"),
    ("model: {d_model: [\n", "not plain YAML data"),
])
def test_aliases_duplicates_and_non_mappings_are_rejected(tmp_path, text, expected):
    assert expected in rejection(write_run(tmp_path, text))


def test_an_oversized_config_is_rejected_unread(tmp_path):
    text = OmegaConf.to_yaml(compose_config()) + "#" * MAX_YAML_BYTES
    assert "larger than" in rejection(write_run(tmp_path, text))


@pytest.mark.parametrize("key, value, expected", [
    ("d_model", 33, "model.d_model=33 must be divisible by model.n_heads=2"),
    ("d_model", "wide", "model.d_model: Value 'wide' of type 'str' could not be converted to Integer"),
    ("dropout", 1.5, "model.dropout=1.5 must be in [0, 1)"),
])
def test_invalid_values_fail_with_one_line_naming_the_setting(tmp_path, key, value, expected):
    config = saved_config()
    config["model"][key] = value
    assert expected in rejection(write_run(tmp_path, config))


def test_an_intervention_undone_by_a_later_value_is_rejected(tmp_path):
    config = saved_config("intervention=grad_clip")
    config["train"]["grad_clip"] = None
    assert "undoes it" in rejection(write_run(tmp_path, config))


def test_keys_missing_from_an_older_config_take_defaults_with_a_warning(tmp_path):
    config = saved_config()
    del config["train"]["compile"]
    warnings: list[str] = []
    cfg = load_run_config(write_run(tmp_path, config), warn=warnings.append)
    assert cfg.train.compile is False
    assert len(warnings) == 1 and "has no train.compile" in warnings[0]


def test_a_retired_key_of_an_older_config_is_dropped_with_a_warning(tmp_path):
    config = saved_config()
    config["train"]["fail_at_step"] = None  # the NaN hook, now GPTX_FAULT=nan@STEP
    warnings: list[str] = []
    assert load_run_config(write_run(tmp_path, config), warn=warnings.append) == typed_config()
    assert len(warnings) == 1 and "train.fail_at_step, no longer a config key" in warnings[0]


def test_pickle_files_are_reported_and_never_opened(tmp_path, no_unpickling):
    marker = tmp_path / "unpickled"
    run_dir = write_run(tmp_path / "run", OmegaConf.to_yaml(compose_config()))
    (run_dir / "ckpt.pt").write_bytes(pickle.dumps(Bomb(marker)))
    (run_dir / "old").mkdir()
    (run_dir / "old" / "state.pkl").write_bytes(pickle.dumps(Bomb(marker)))
    warnings: list[str] = []
    assert load_run_config(run_dir, warn=warnings.append) == typed_config()
    assert pickle_files(run_dir) == [run_dir / "ckpt.pt", run_dir / "old" / "state.pkl"]
    assert len(warnings) == 2 and all("never opens it" in w for w in warnings)
    assert not marker.exists()


def test_hydra_yaml_is_only_described_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_cb_runconfig.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Cb: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = write_run(tmp_path / "run", OmegaConf.to_yaml(compose_config()))
    hydra = {"hydra": {"callbacks": {"evil": {"_target_": "evil_cb_runconfig.Cb"}},
                       "job": {"env_set": {"AWS_SECRET": "${oc.env:AWS_SECRET}"}},
                       "launcher": {"_target_": "evil_cb_runconfig.Launcher", "setup": ["curl x | sh", "rm -rf ~"]}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    load_run_config(run_dir)
    report = "\n".join(hydra_yaml_report(run_dir))
    assert "callback evil: evil_cb_runconfig.Cb" in report
    assert "env_set: AWS_SECRET" in report and "oc.env" not in report
    assert "launcher setup: 2 shell line(s)" in report
    assert not marker.exists() and "evil_cb_runconfig" not in sys.modules

"""gptx.naming: sweep names that stay inside multirun_outputs/, safe run folders, one folder per launch."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import hydra.core.utils
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gptx.config import CONF_DIR
from gptx.naming import ExclusiveFolders, run_subdir, sweep_name

from conftest import REPO

APP_CONF = REPO / "tests" / "launcher_app" / "conf"
DATED = re.compile(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}")


@pytest.mark.parametrize("name", ["ablation", "lr-3e-4_v2", "a.b", "x" * 100, "2025-11-25/14-03-07",
                                  "2025-11-25/14-03-07_2", 7])
def test_good_sweep_names_are_kept(tmp_path, name):
    assert sweep_name(name, root=tmp_path) == str(name)


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/abs", "", "x" * 101, "has space", "tab\tx",
                                  "ünï", "-flag", ".hidden", "a/../..", "2025-11-25", "semi;colon", "$HOME"])
def test_bad_sweep_names_are_refused_in_one_line(tmp_path, name):
    with pytest.raises(ValueError, match="is not a valid sweep name") as err:
        sweep_name(name, root=tmp_path)
    assert "\n" not in str(err.value)


def test_a_sweep_name_through_a_symlink_out_of_the_root_is_refused(tmp_path):
    root, elsewhere = tmp_path / "multirun_outputs", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "sneaky").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="outside"):
        sweep_name("sneaky", root=root)


def test_no_name_gives_the_dated_default():
    assert sweep_name(None, "2025-11-25/14-03-07") == "2025-11-25/14-03-07"


def composed(conf_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("conf_dir", [CONF_DIR, APP_CONF], ids=["gptx", "stand_in_app"])
def test_composing_the_config_creates_no_folder(tmp_path, monkeypatch, conf_dir):
    monkeypatch.chdir(tmp_path)
    cfg = composed(conf_dir)
    OmegaConf.resolve(cfg)  # what `--cfg hydra --resolve` or a careless tool does
    assert DATED.fullmatch(str(cfg.hydra.sweep.dir).removeprefix("multirun_outputs/"))
    assert not any(tmp_path.iterdir())


class Frozen(datetime.datetime):
    """Hydra's clock (the `${now:}` resolver), stopped at 2025-11-25 14:03:07."""

    @classmethod
    def now(cls, tz=None):
        return cls(2025, 11, 25, 14, 3, 7)


def test_same_second_sweeps_get_their_own_folders_pinned_for_every_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hydra.core.utils, "datetime", Frozen)
    first, second = composed(CONF_DIR), composed(CONF_DIR)  # two launches in the same second
    for cfg in (first, second):
        ExclusiveFolders().on_multirun_start(cfg)
    assert sorted(os.listdir(tmp_path / "multirun_outputs" / "2025-11-25")) == ["14-03-07", "14-03-07_1"]
    assert second.hydra.sweep.dir == "multirun_outputs/2025-11-25/14-03-07_1"
    # Every job's config is composed again from the overrides: the pin names the reserved folder.
    assert list(second.hydra.overrides.hydra) == ["hydra.sweep.dir=multirun_outputs/2025-11-25/14-03-07_1"]
    job = composed(CONF_DIR, *second.hydra.overrides.hydra)
    assert job.hydra.sweep.dir == "multirun_outputs/2025-11-25/14-03-07_1"


def test_a_named_sweep_or_an_explicit_run_folder_is_not_reserved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = composed(CONF_DIR, "sweep=again")
    ExclusiveFolders().on_multirun_start(named)
    explicit = composed(CONF_DIR, f"hydra.run.dir={tmp_path / 'resume_me'}")
    ExclusiveFolders().on_run_start(explicit)
    assert not any(tmp_path.iterdir()) and list(named.hydra.overrides.hydra) == []
    assert explicit.hydra.run.dir == str(tmp_path / "resume_me")


def test_a_single_run_folder_is_reserved_as_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = composed(CONF_DIR)
    default = str(cfg.hydra.run.dir)
    (tmp_path / default).mkdir(parents=True)  # another run took this second
    ExclusiveFolders().on_run_start(cfg)
    assert cfg.hydra.run.dir == f"{default}_1" and (tmp_path / f"{default}_1").is_dir()


def test_run_folder_names_stay_one_folder():
    assert run_subdir("init_seed=22,intervention=grad_clip") == "intervention=grad_clip,init_seed=22"
    assert (run_subdir("a.b=1,init_seed=2,intervention=[grad_clip,qkv_bias],replica=1")
            == "intervention=[grad_clip,qkv_bias],init_seed=2,replica=1,a.b=1")
    assert run_subdir("data.path=/tmp/x") == "data.path=%2Ftmp%2Fx"
    assert run_subdir("data.path=../../x") == "data.path=..%2F..%2Fx"
    assert run_subdir("") == "default" and run_subdir(None) == "default"
    assert run_subdir("a=%2F") != run_subdir("a=/")  # escaping keeps distinct overrides distinct


def test_long_run_folder_names_are_shortened_but_stay_distinct():
    a, b = run_subdir("k=" + "x" * 400 + "a"), run_subdir("k=" + "x" * 400 + "b")
    assert a != b and len(a.encode()) <= 200 and len(b.encode()) <= 200
    assert len(run_subdir("k=" + "é" * 300).encode()) <= 200

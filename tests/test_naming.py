"""gptx.naming: sweep names that stay inside multirun_outputs/, safe run folders, one folder per launch."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import hydra.core.utils
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, read_write

from gptx.config import CONF_DIR
from gptx.naming import (
    SWEEP_SUBDIR,
    ExclusiveFolders,
    run_subdir,
    shared_overrides,
    sweep_name,
    sweep_subdir,
    sweep_subdir_setting,
)

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


NAMING = OmegaConf.create({"exclude_keys": ["sweep", "overwrite"], "item_sep": ",", "kv_sep": "="})


def multirun(task: list[str], params: dict | None = None):
    """The `hydra` node of a multirun as the callbacks see it: the command line, the sweeper's params."""
    return OmegaConf.create({"overrides": {"task": task}, "sweeper": {"params": params},
                             "job": {"config": {"override_dirname": NAMING}}})


def test_the_shared_overrides_are_the_keys_with_one_plain_value():
    task = ["sweep=x", "train.lr=-1,0.001", "train.weight_decay=1e-1", "a=range(1,3)", "b=choice(1,2)",
            "c=interval(0,1)", "intervention=glob(*)", "+d=1", "replica=[0,1]", "k=1", "k=2", "m=5",
            "data.path='my data/it\\'s {x}'"]
    params = {"init_seed": "22,42", "model.d_model": "32", "e": "tag(log,interval(0,1))", "f": "==(",
              "+g@pkg": "==(", "h": {"type": "range", "bounds": [0, 1]}, "m": "1,2"}  # other sweepers' spaces too
    # A later value replaces an earlier one (the command line comes after the params: m=5); a list is one
    # value; a value is written as Hydra writes it in a job's overrides (1e-1 as 0.1), %-escaped.
    shared = ["d=1", "data.path=%27my%20data/it%5C%27s%20%7Bx%7D%27", "k=2", "m=5", "model.d_model=32",
              "replica=[0,1]", "train.weight_decay=0.1"]
    assert shared_overrides(multirun(task, params)) == shared
    assert shared_overrides(multirun([*task, "init_seed=7", "g=1"], params)) == sorted([*shared, "g=1", "init_seed=7"])
    assert shared_overrides(multirun(["sweep=x", "overwrite=true"])) == []  # excluded keys are left out anyway


def test_a_sweeps_folder_is_named_by_the_keys_that_vary(tmp_path):
    job = ["sweep=x", "train.weight_decay=0.123456789", "train.lr=0.001", "data.test_sequences=8"]
    shared = ["data.test_sequences=8", "train.weight_decay=0.123456789"]
    assert sweep_subdir(tmp_path, job, NAMING, shared) == "train.lr=0.001"
    everything = "data.test_sequences=8,train.lr=0.001,train.weight_decay=0.123456789"
    assert sweep_subdir(tmp_path, job, NAMING, []) == everything
    # A key given another value than the shared one (a sweeper's new init_seed) names the folder.
    assert sweep_subdir(tmp_path, job, NAMING, ["data.test_sequences=16", "train.weight_decay=0.123456789"]) == (
        "data.test_sequences=8,train.lr=0.001")
    # Nothing varies (a one-job multirun): named by all its overrides, as before.
    assert sweep_subdir(tmp_path, job, NAMING, [*shared, "train.lr=0.001"]) == everything
    assert sweep_subdir(tmp_path, ["sweep=x"], NAMING, []) == "default"
    long_job = ["train.lr=0.001", "data.path=" + "p" * 300]
    assert sweep_subdir(tmp_path, long_job, NAMING, ["data.path=" + "p" * 300]) == "train.lr=0.001"
    assert "~" in sweep_subdir(tmp_path, long_job, NAMING, [])  # still cut and hashed when long


def saved_run(folder: Path, overrides: list[str]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))


def test_a_job_goes_back_to_the_folder_that_holds_its_run(tmp_path):
    # A folder named the old way (every override): the same job, its overrides in another order, keys
    # left out of names (overwrite) aside, finds it.
    saved_run(tmp_path / "old" / "train.lr=0.001,train.weight_decay=0.1", ["train.weight_decay=0.1", "train.lr=0.001"])
    job = ["sweep=x", "train.lr=0.001", "train.weight_decay=0.1", "overwrite=true"]
    old_name = "train.lr=0.001,train.weight_decay=0.1"
    assert sweep_subdir(tmp_path / "old", job, NAMING, ["train.weight_decay=0.1"]) == old_name
    # A folder named by another launch's varying keys.
    saved_run(tmp_path / "other" / "init_seed=1", ["intervention=grad_clip", "init_seed=1"])
    job = ["intervention=grad_clip", "init_seed=1"]
    assert sweep_subdir(tmp_path / "other", job, NAMING, []) == "init_seed=1"


def test_a_short_name_holding_another_jobs_run_gives_the_full_name(tmp_path):
    saved_run(tmp_path / "init_seed=1", ["intervention=grad_clip", "init_seed=1"])
    (tmp_path / "init_seed=2").mkdir()  # a folder with no run in it yet (a launcher made it) is free
    shared = ["intervention=qkv_bias"]
    assert sweep_subdir(tmp_path, ["intervention=qkv_bias", "init_seed=1"], NAMING, shared) == (
        "intervention=qkv_bias,init_seed=1")
    assert sweep_subdir(tmp_path, ["intervention=qkv_bias", "init_seed=2"], NAMING, shared) == "init_seed=2"
    assert not (tmp_path / "intervention=qkv_bias,init_seed=1").exists()  # naming creates nothing


PATH = "data.path='a \\${b}\\'s,[c]'"  # a value with what would need quoting in the pinned override


def test_the_sweep_pins_its_shared_overrides_into_every_jobs_subdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    master = composed(CONF_DIR, "sweep=x")
    assert OmegaConf.to_container(master.hydra.sweep)["subdir"] == SWEEP_SUBDIR
    with read_write(master.hydra):
        master.hydra.overrides.task = ["sweep=x", "train.lr=-1,0.001", "train.weight_decay=0.123456789", PATH]
    ExclusiveFolders().on_multirun_start(master)
    pins = OmegaConf.to_container(master.hydra.overrides.hydra)
    shared = ["data.path=%27a%20%24%7Bb%7D%5C%27s,[c]%27", "train.weight_decay=0.123456789"]
    assert pins == [f"hydra.sweep.subdir='{sweep_subdir_setting(shared)}'"]
    # Each job's config is composed again from the pinned overrides (on a cluster node too).
    job = composed(CONF_DIR, *pins, "sweep=x", "train.lr=-1", "train.weight_decay=0.123456789", PATH)
    assert job.hydra.sweep.subdir == "train.lr=-1"
    hydras = OmegaConf.to_container(job.hydra.job, resolve=False)["override_dirname"]  # Hydra's own, as before
    assert hydras == f"{PATH},train.lr=-1,train.weight_decay=0.123456789"
    assert not any(tmp_path.iterdir())


def test_a_subdir_of_the_users_own_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    master = composed(CONF_DIR, "sweep=x", "hydra.sweep.subdir=${hydra.job.num}")
    with read_write(master.hydra):
        master.hydra.overrides.task = ["sweep=x", "train.lr=-1,0.001", "train.weight_decay=0.1"]
    ExclusiveFolders().on_multirun_start(master)
    assert OmegaConf.to_container(master.hydra.overrides.hydra) == ["hydra.sweep.subdir=${hydra.job.num}"]
    assert OmegaConf.to_container(master.hydra.sweep)["subdir"] == "${hydra.job.num}"


def test_gptx_names_folders_and_splits_sweeps_as_this_hydra_does():
    """gptx keeps its own copies of two small Hydra internals (no hydra._internal import): here they are
    checked against the installed Hydra's, so a release that changes either fails loudly."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gptx.naming import BASIC_LAUNCHER, BASIC_SWEEPER, _dirname, expand_sweep

    lines = ["intervention=grad_clip,qkv_bias", "init_seed=1,2", "train.lr=0.001", "init_seed=3,4", "+x=[1,2]"]
    overrides = OverridesParser.create().parse_overrides(lines)
    assert expand_sweep(overrides) == [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    naming = OmegaConf.create({"exclude_keys": ["train.lr"], "item_sep": ",", "kv_sep": "="})
    single = OverridesParser.create().parse_overrides(["b=2", "a=1", "train.lr=3", "c=[1,2]"])
    assert _dirname(single, naming) == get_overrides_dirname(single, ["train.lr"], ",", "=")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name="config", return_hydra_config=True).hydra
        assert (hydra_cfg.launcher._target_, hydra_cfg.sweeper._target_) == (BASIC_LAUNCHER, BASIC_SWEEPER)

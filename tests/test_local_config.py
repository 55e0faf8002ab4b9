"""A machine's own defaults (local/default.yaml in $GPTX_CONFIG_DIR) and output_root, as a cluster user sets them."""

from __future__ import annotations

import json

from conftest import TINY, run_gptx

CLUSTER = """# @package _global_
defaults:
  - override /hydra/launcher: slurm_gpu
hydra:
  launcher:
    partition: debug
    account: myproj
"""


def local(tmp_path, text: str):
    (tmp_path / "conf" / "local").mkdir(parents=True)
    (tmp_path / "conf" / "local" / "default.yaml").write_text(text)
    return {"GPTX_CONFIG_DIR": str(tmp_path / "conf")}


def test_a_machines_launcher_and_account_are_set_once(tmp_path):
    proc = run_gptx("--cfg", "hydra", cwd=tmp_path, env=local(tmp_path, CLUSTER))
    assert proc.returncode == 0, proc.stderr
    assert "GptxSlurmLauncher" in proc.stdout and "partition: debug" in proc.stdout and "account: myproj" in proc.stdout


def test_local_values_apply_and_the_command_line_wins(tmp_path):
    env = local(tmp_path, "# @package _global_\ntrain:\n  lr: 0.001\n  weight_decay: 0.05\n")
    proc = run_gptx("train.weight_decay=0.2", "--cfg", "job", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "  lr: 0.001\n" in proc.stdout and "  weight_decay: 0.2\n" in proc.stdout


def test_no_local_folder_no_effect_and_no_warning(tmp_path):
    proc = run_gptx("--cfg", "job", cwd=tmp_path, env={"GPTX_CONFIG_DIR": str(tmp_path / "absent")})
    assert proc.returncode == 0 and "  lr: 0.0004\n" in proc.stdout and "Warning" not in proc.stderr


def test_output_root_files_single_runs_and_sweeps_under_it(tmp_path):
    root = tmp_path / "project"
    env = local(tmp_path, f"# @package _global_\noutput_root: {root}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    single = run_gptx(*TINY, "train.max_steps=1", cwd=work, env=env)
    sweep = run_gptx("-m", *TINY, "train.max_steps=1", "sweep=s", "init_seed=1,2", cwd=work, env=env)
    assert single.returncode == 0 and sweep.returncode == 0, single.stderr[-2000:] + sweep.stderr[-2000:]
    (result,) = (root / "outputs").rglob("result.json")
    assert json.loads(result.read_text())["status"] == "completed"
    assert len(list((root / "multirun_outputs" / "s").rglob("result.json"))) == 2
    assert list(work.iterdir()) == []  # nothing lands where the command ran

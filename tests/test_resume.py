"""Exact resume: interrupted-and-resumed runs end bit-identical to uninterrupted ones."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest

from gptx.checkpoint import list_checkpoints

from conftest import TINY, run_gptx

pytestmark = pytest.mark.slow

RUN = [*TINY, "train.max_steps=12", "train.checkpoint_every=3", "train.eval_every=4"]


def per_step_losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in map(json.loads, lines)]


def result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 and mtime of every file under folder, .hydra/ included."""
    return {str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}@{p.stat().st_mtime_ns}"
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    proc = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=run_dir)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def assert_same_as_reference(run_dir: Path, reference: Path) -> None:
    got, want = result(run_dir), result(reference)
    assert got["status"] == "completed"
    assert got["final_weights_sha256"] == want["final_weights_sha256"]
    assert got["test_loss"] == want["test_loss"]
    assert per_step_losses(run_dir) == per_step_losses(reference)


def test_two_signals_one_during_evaluation_then_resume(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    first = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "step@5=TERM"})
    assert first.returncode == 128 + signal.SIGTERM, first.stderr
    assert result(tmp_path)["status"] == "interrupted"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    second = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "eval@8=USR1"})
    assert second.returncode == 128 + signal.SIGUSR1, second.stderr
    assert list_checkpoints(tmp_path)[-1].name == "step_00000008"
    third = run_gptx(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "resuming from step_00000008" in (tmp_path / "train.log").read_text()
    assert_same_as_reference(tmp_path, reference)
    assert list_checkpoints(tmp_path) == []


def test_sigkill_after_a_checkpoint_then_rerun(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    first = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "checkpoint@6=KILL"})
    assert first.returncode == -signal.SIGKILL
    assert result(tmp_path)["status"] == "running"
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert_same_as_reference(tmp_path, reference)


def test_kill_during_a_save_keeps_the_previous_checkpoint(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    first = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "save@6=KILL"})
    assert first.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003"]
    assert any(p.name.startswith(".tmp-step_00000006") for p in (tmp_path / "checkpoints").iterdir())
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert_same_as_reference(tmp_path, reference)


def test_truncated_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    assert run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "checkpoint@6=KILL"}).returncode == -signal.SIGKILL
    newest = list_checkpoints(tmp_path)[-1] / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert "resuming from step_00000003" in (tmp_path / "train.log").read_text()
    assert_same_as_reference(tmp_path, reference)


def test_no_valid_checkpoint_is_a_loud_failure_not_a_restart(tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    assert run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "checkpoint@3=KILL"}).returncode == -signal.SIGKILL
    state = list_checkpoints(tmp_path)[0] / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit-pattern: the sha256 in meta.json no longer matches
    state.write_bytes(bytes(data))
    before = (tmp_path / "metrics.jsonl").read_text()
    proc = run_gptx(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "no valid checkpoint" in proc.stderr and proc.stderr.count("\n") <= 2
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_resume_mid_logging_interval_logs_the_same_averages(tmp_path):
    # Metrics lines average the train loss over log_every steps; a resume inside an interval must
    # carry the partial sums over, or the next line would average fewer steps.
    args = [*RUN, "train.log_every=4"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_gptx(*args, f"hydra.run.dir={ref}", cwd=tmp_path).returncode == 0
    first = run_gptx(*args, f"hydra.run.dir={cut}", cwd=tmp_path, env={"GPTX_FAULT": "step@7=TERM"})
    assert first.returncode == 128 + signal.SIGTERM
    assert run_gptx(*args, f"hydra.run.dir={cut}", cwd=tmp_path).returncode == 0
    assert per_step_losses(cut) == per_step_losses(ref)
    assert result(cut)["train_loss"] == result(ref)["train_loss"]


def test_overwrite_does_not_throw_away_a_run_resuming_its_own_checkpoint(reference, tmp_path):
    args = [*RUN, "overwrite=true", f"hydra.run.dir={tmp_path}"]
    assert run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "step@8=TERM"}).returncode == 128 + signal.SIGTERM
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert "resuming from step_00000007" in (tmp_path / "train.log").read_text()
    assert_same_as_reference(tmp_path, reference)


def test_ctrl_c_checkpoints_and_the_rerun_resumes(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    first = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "step@5=INT"})
    assert first.returncode == 128 + signal.SIGINT, first.stderr
    assert list_checkpoints(tmp_path)[-1].name == "step_00000004"
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert_same_as_reference(tmp_path, reference)


def test_a_refused_rerun_leaves_the_interrupted_run_byte_identical(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    assert run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "step@4=TERM"}).returncode == 128 + signal.SIGTERM
    before = tree_digest(tmp_path)
    refused = run_gptx(*args, "init_seed=7", cwd=tmp_path)  # another config into the same folder
    assert refused.returncode == 2, refused.stderr
    assert tree_digest(tmp_path) == before  # .hydra/config.yaml still says init_seed 42
    assert refused.stderr.count("\n") == 1
    assert "--config-path" in refused.stderr and "overwrite=true starts it over, deleting its checkpoints" \
        in refused.stderr
    # The documented resume, from the saved config, still works and ends identical.
    resumed = run_gptx("--config-path", str(tmp_path / ".hydra"), "--config-name", "config",
                       f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step_00000003" in (tmp_path / "train.log").read_text()
    assert_same_as_reference(tmp_path, reference)


def test_two_ctrl_c_during_the_final_outputs_still_complete_the_run(reference, tmp_path):
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    proc = run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "final@12=INT,final@12=INT"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("writing the run's final outputs first") == 2
    assert_same_as_reference(tmp_path, reference)
    assert (tmp_path / "model.safetensors").is_file() and list_checkpoints(tmp_path) == []


def test_a_kill_during_the_final_outputs_reruns_only_them(reference, tmp_path):
    # The checkpoint written before the final evaluation: the rerun starts at the last step, not step 9.
    args = [*RUN, f"hydra.run.dir={tmp_path}"]
    assert run_gptx(*args, cwd=tmp_path, env={"GPTX_FAULT": "final@12=KILL"}).returncode == -signal.SIGKILL
    assert result(tmp_path)["status"] == "running"
    assert list_checkpoints(tmp_path)[-1].name == "step_00000012"
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    assert "resuming from step_00000012 (step 12 of 12)" in (tmp_path / "train.log").read_text()
    assert_same_as_reference(tmp_path, reference)
    assert result(tmp_path)["train_loss"] == result(reference)["train_loss"]
    assert result(tmp_path)["val_loss"] == result(reference)["val_loss"]


def test_random_offset_batches_repeat_bit_for_bit_and_across_a_resume(reference, tmp_path):
    # data.order=random_offsets draws each step's windows from (data_seed, step) alone: two runs agree bit for
    # bit, and a run killed after its step-6 checkpoint resumes onto the same windows
    args = [*RUN, "data.order=random_offsets", "data_seed=3"]
    first, second, killed = (tmp_path / name for name in ("first", "second", "killed"))
    for run_dir in (first, second):
        assert run_gptx(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    assert_same_as_reference(second, first)
    assert result(first)["final_weights_sha256"] != result(reference)["final_weights_sha256"]
    interrupted = run_gptx(*args, f"hydra.run.dir={killed}", cwd=tmp_path, env={"GPTX_FAULT": "checkpoint@6=KILL"})
    assert interrupted.returncode == -signal.SIGKILL
    assert run_gptx(*args, f"hydra.run.dir={killed}", cwd=tmp_path).returncode == 0
    assert "resuming from step_00000006" in (killed / "train.log").read_text()
    assert_same_as_reference(killed, first)

"""Damaged weights are never used silently, and identical runs write byte-identical weights files.

A bit flipped in the data of a completed run's model.safetensors (or of a lone gptx .safetensors) makes
export, generate, evaluate and compare stop in one line; a relaunch of the run (single or in a sweep)
trains it again instead of calling it "already completed", and gets back the very bytes it had.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import faultkit
import pytest
from faultkit import CALLBACK, LOCAL, result, run_gptx

from gptx.files import file_sha256, safetensors_complete
from gptx.result import load_result, weights_intact

pytestmark = pytest.mark.slow

RUN = faultkit.SHORT


completed = faultkit.completed  # a finished run of SHORT (a pytest fixture)


def flip_data_bit(path: Path) -> None:
    """Flip one bit in the last tensor's data (the header and the file's length stay as they were)."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))


def damaged_copy(completed: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "damaged"
    shutil.copytree(completed, run_dir)
    flip_data_bit(run_dir / "model.safetensors")
    return run_dir


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ": error:" in ln]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_identical_runs_write_identical_weights_files(completed, tmp_path):
    again = tmp_path / "again"
    assert run_gptx(*RUN, f"hydra.run.dir={again}", cwd=tmp_path).returncode == 0
    assert (again / "model.safetensors").read_bytes() == (completed / "model.safetensors").read_bytes()
    assert result(again)["final_weights_sha256"] == result(completed)["final_weights_sha256"]
    assert result(completed)["weights_file_sha256"] == file_sha256(completed / "model.safetensors")


@pytest.mark.parametrize("tool", ["export", "generate", "evaluate", "compare"])
def test_a_flipped_weight_bit_is_one_line_in_every_tool(completed, tmp_path, tool):
    run_dir = damaged_copy(completed, tmp_path)
    args = {"export": [str(run_dir), str(tmp_path / "hf")], "generate": [str(run_dir), "--max-new-tokens", "2"],
            "evaluate": [str(run_dir), "--test-sequences", "2"], "compare": [str(run_dir), str(completed)]}[tool]
    line = one_error_line(run_gptx(*args, module=f"gptx.{tool}", cwd=tmp_path))
    assert "damaged" in line or "does not match" in line
    assert not (tmp_path / "hf").exists()


def test_a_lone_weights_file_is_checked_against_its_metadata(completed, tmp_path):
    lone = tmp_path / "best.safetensors"
    shutil.copy(completed / "model.safetensors", lone)
    assert run_gptx(str(lone), "--max-new-tokens", "2", module="gptx.generate", cwd=tmp_path).returncode == 0
    flip_data_bit(lone)
    assert "does not match its recorded" in one_error_line(
        run_gptx(str(lone), "--max-new-tokens", "2", module="gptx.generate", cwd=tmp_path))


@pytest.mark.parametrize("damage", ["flip", "truncate", "legacy-truncate"])
def test_a_relaunch_trains_a_run_with_damaged_weights_again(completed, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(completed, run_dir)
    weights = run_dir / "model.safetensors"
    original = weights.read_bytes()
    if damage == "flip":
        flip_data_bit(weights)
    else:
        weights.write_bytes(original[: len(original) // 2])
    if damage == "legacy-truncate":  # a run from before weights_file_sha256: its file is checked for completeness
        text = (run_dir / "result.json").read_text()
        (run_dir / "result.json").write_text(text.replace('"weights_file_sha256"', '"old_unused"'))
    assert not weights_intact(run_dir, load_result(run_dir))[0]
    proc = run_gptx(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already completed" not in proc.stdout and "training the run again" in proc.stdout
    assert weights.read_bytes() == original and result(run_dir)["status"] == "completed"


def test_a_sweep_relaunch_does_not_skip_a_run_with_damaged_weights(tmp_path):
    args = ["-m", *RUN, *LOCAL, "sweep=s", "init_seed=1,2", CALLBACK]
    assert run_gptx(*args, cwd=tmp_path).returncode == 0
    runs = sorted(p.parent for p in (tmp_path / "multirun_outputs" / "s").glob("*/result.json"))
    originals = [(r / "model.safetensors").read_bytes() for r in runs]
    flip_data_bit(runs[0] / "model.safetensors")
    proc = run_gptx(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r / "model.safetensors").read_bytes() for r in runs] == originals
    assert "1 ran in this launch" in proc.stdout


def test_completeness_check_needs_no_data_read(completed, tmp_path):
    weights = tmp_path / "w.safetensors"
    data = (completed / "model.safetensors").read_bytes()
    weights.write_bytes(data)
    assert safetensors_complete(weights)
    weights.write_bytes(data + b"\0")
    assert not safetensors_complete(weights)
    weights.write_bytes(data[:8] + b"[" + data[9:])
    assert not safetensors_complete(weights)

"""Scenario 3: truncated or bit-flipped checkpoint: detected (manifest sha256), fall back to the previous
valid one; none valid → loud failure, never retraining over the folder.

tests/test_resume.py truncates the newest state file (which safetensors itself rejects) and flips the
last byte of a lone checkpoint. Here: one flipped bit in the middle of the tensor data, which
safetensors loads without complaint (only the sha256 in meta.json catches it), and a garbled
meta.json; then both checkpoints bad at once, which must fail in one line and leave the folder as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import faultkit
import pytest
from faultkit import assert_identical, cli_run, tree_digest
from safetensors.torch import load_file

from gptx.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

reference = faultkit.reference  # the shared uninterrupted run (a pytest fixture)


killed = faultkit.killed  # a run killed after its step-4 checkpoint (a pytest fixture)


@pytest.fixture
def run_dir(killed, tmp_path) -> Path:
    return Path(shutil.copytree(killed, tmp_path / "run"))


def flip_middle_bit(checkpoint: Path) -> None:
    state = checkpoint / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor data, far past the header
    state.write_bytes(bytes(data))


def garble_meta(checkpoint: Path) -> None:
    meta = checkpoint / "meta.json"
    meta.write_bytes(meta.read_bytes()[:40])  # torn write: not JSON any more


@pytest.mark.parametrize("corrupt", [flip_middle_bit, garble_meta], ids=["bit_flip_in_state", "garbled_meta"])
def test_scenario_03_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, run_dir, corrupt):
    newest = list_checkpoints(run_dir)[-1]
    corrupt(newest)
    if corrupt is flip_middle_bit:
        load_file(str(newest / "state.safetensors"))  # safetensors alone would have trusted it
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def flip_meta_bit(checkpoint: Path, text: str, index: int, bit: int) -> None:
    """Flip one bit of meta.json, in character `index` of the first occurrence of `text`."""
    meta = checkpoint / "meta.json"
    data = bytearray(meta.read_bytes())
    data[data.index(text.encode()) + index] ^= bit
    meta.write_bytes(bytes(data))


def test_scenario_03_a_bit_flip_in_a_meta_json_value_is_detected(reference, run_dir):
    flip_meta_bit(list_checkpoints(run_dir)[-1], '"step": 4', 8, 0x02)  # '4' (0x34) -> '6' (0x36)
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def test_scenario_03_a_bit_flip_in_a_meta_json_key_falls_back(reference, run_dir):
    flip_meta_bit(list_checkpoints(run_dir)[-1], '"step": 4', 3, 0x01)  # "step" -> "stdp"
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference)


def test_scenario_03_no_valid_checkpoint_fails_loudly_and_leaves_the_folder_as_it_was(run_dir):
    older, newest = list_checkpoints(run_dir)
    flip_middle_bit(newest)
    garble_meta(older)
    before = tree_digest(run_dir, mtimes=False)
    before.pop(".hydra/hydra.yaml")  # Hydra's record of this launch (its paths, its time), rewritten per launch
    proc = cli_run(run_dir)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("gptx: error: no valid checkpoint in ")
    assert "step_00000004: state.safetensors does not match the sha256 in meta.json" in line
    assert "step_00000002: " in line and "refusing to retrain over it" in line
    after = tree_digest(run_dir, mtimes=False)
    after.pop(".hydra/hydra.yaml")
    assert after == before  # no step retrained, no checkpoint replaced, metrics and result.json untouched

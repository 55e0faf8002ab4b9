"""Hostile or odd files a run folder can hold give one line or are skipped, never a traceback.

A deeply nested result.json (200 KB) or one holding a list, a non-UTF-8 metrics.jsonl, a `checkpoints`
that is a file, a symlink loop as the run folder, and YAML nested thousands deep in a saved config or in
a weights file's metadata, a model too large for the machine — each read by the commands that read it,
in real processes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import faultkit
import pytest
import torch
from faultkit import TINY, assert_identical, cli_run, run_gptx
from safetensors import safe_open
from safetensors.torch import save_file

pytestmark = pytest.mark.slow

reference = faultkit.reference  # the shared uninterrupted run (a pytest fixture)
NESTED_JSON = "[" * 100_000 + "]" * 100_000  # 200 KB: past the parser's recursion limit


def no_traceback(proc) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "RecursionError" not in text, text[-3000:]


def one_line(proc) -> str:
    no_traceback(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ": error:" in ln]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


killed = faultkit.killed  # a run killed after its step-4 checkpoint (a pytest fixture)


@pytest.mark.parametrize("content", [NESTED_JSON, "[1, 2]"], ids=["nested", "list"])
def test_a_hostile_result_json_is_one_line_or_skipped(reference, tmp_path, content):
    run_dir = Path(shutil.copytree(reference, tmp_path / "sweep" / "run"))
    (run_dir / "result.json").write_text(content)
    assert "nested too deeply" in one_line(run_gptx(str(run_dir), module="gptx.reproduce", cwd=tmp_path)) \
        or content != NESTED_JSON
    no_traceback(run_gptx(str(tmp_path / "sweep"), module="gptx.analyze", cwd=tmp_path))
    compared = run_gptx(str(run_dir), str(reference), module="gptx.compare", cwd=tmp_path)
    no_traceback(compared)
    assert compared.returncode == 0  # the weights still verify against their own metadata
    resumed = cli_run(run_dir)  # the same command: the run is trained again, its result.json replaced
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    no_traceback(resumed)
    assert_identical(run_dir, reference)


def test_a_non_utf8_metrics_line_does_not_block_the_resume(reference, killed, tmp_path):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 5, "train_loss": \xff\xfe}\n')
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(run_dir, reference)


def test_a_checkpoints_file_is_one_line(killed, tmp_path):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("not a folder")
    assert "is not a plain folder" in one_line(cli_run(run_dir))


def test_a_symlink_loop_as_the_run_folder_is_one_line(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    line = one_line(run_gptx(*TINY, f"hydra.run.dir={tmp_path / 'loop'}", cwd=tmp_path))
    assert "cannot be opened" in line


def test_yaml_nested_thousands_deep_is_one_line(reference, tmp_path):
    nested = "a: " + "[" * 20_000 + "]" * 20_000 + "\n"
    run_dir = Path(shutil.copytree(reference, tmp_path / "run"))
    (run_dir / ".hydra" / "config.yaml").write_text(nested)
    assert "nested too deeply" in one_line(run_gptx(str(run_dir), module="gptx.reproduce", cwd=tmp_path))
    lone = tmp_path / "lone.safetensors"
    save_file({"tok_emb.weight": torch.zeros(4, 4)}, str(lone), metadata={"gptx_config": nested})
    assert "nested too deeply" in one_line(run_gptx(str(lone), module="gptx.generate", cwd=tmp_path))


def test_a_model_too_large_for_the_machine_is_one_line(reference, tmp_path):
    line = one_line(run_gptx(*TINY, "model.d_model=2000000", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert "choose a smaller model" in line and not (tmp_path / "run" / "result.json").exists()
    with safe_open(str(reference / "model.safetensors"), framework="pt") as f:
        config = f.metadata()["gptx_config"]
    assert "d_model: 32\n" in config
    lone = tmp_path / "huge.safetensors"
    save_file({"tok_emb.weight": torch.zeros(4, 4)}, str(lone),
              metadata={"gptx_config": config.replace("d_model: 32\n", "d_model: 2000000\n")})
    assert "choose a smaller model" in one_line(run_gptx(str(lone), module="gptx.generate", cwd=tmp_path))

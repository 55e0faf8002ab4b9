"""Limits on what a command line, a saved config or a weights file may ask of gptx (issue 32, item 8).

One cap on the model's size (gptx.model.MAX_PARAMETERS, 2 billion parameters) for train and for every
tool that builds a model from a saved config; a weights file's header (tensor index and metadata) capped
before it is parsed; `train.sample_tokens` bounded, and the sample stopped between two tokens by a stop
signal. Each in real processes, each refusal one line with nothing allocated, read or written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faultkit
import pytest
import torch
from faultkit import TINY, result, run_gptx
from safetensors import safe_open
from safetensors.torch import save_file

from gptx.files import SAFETENSORS_HEADER_LIMIT
from gptx.model import MAX_PARAMETERS

pytestmark = pytest.mark.slow

RUN = faultkit.SHORT
TOOLS = ["generate", "evaluate", "export", "compare"]
# About 8.9 billion parameters: over the cap, and refused before a byte of it is allocated.
HUGE = {"d_model": 8192, "n_layers": 10}


completed = faultkit.completed  # a finished run of SHORT (a pytest fixture)


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ": error:" in ln]
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


def tool_args(tool: str, model: Path, tmp_path: Path, other: Path) -> list[str]:
    return {"export": [str(model), str(tmp_path / "hf")], "generate": [str(model), "--max-new-tokens", "2"],
            "evaluate": [str(model), "--test-sequences", "2"], "compare": [str(model), str(other)]}[tool]


def huge_config(text: str) -> str:
    for key, value in HUGE.items():
        assert f"  {key}: " in text
        text = "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}: ") else line for line in text.splitlines())
    return text + "\n"


def test_train_refuses_a_model_over_the_cap_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    line = one_error_line(run_gptx(*TINY, *(f"model.{k}={v}" for k, v in HUGE.items()), f"hydra.run.dir={run_dir}",
                                   cwd=tmp_path))
    assert "gptx's cap of 2e+09" in line and "8.88e+09 parameters" in line, line
    assert not run_dir.exists() or [p.name for p in run_dir.iterdir()] in ([], ["train.log"])


@pytest.mark.parametrize("tool", TOOLS)
def test_every_loader_refuses_a_saved_config_over_the_cap(completed, tmp_path, tool):
    """A lone .safetensors whose gptx_config metadata asks for the huge model (its recorded hash makes
    compare load it as a model too), and a run folder whose saved config does."""
    with safe_open(str(completed / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    lone = tmp_path / "huge.safetensors"
    save_file({"tok_emb.weight": torch.zeros(4, 4)}, str(lone),
              metadata={**metadata, "gptx_config": huge_config(metadata["gptx_config"])})
    line = one_error_line(run_gptx(*tool_args(tool, lone, tmp_path, completed), module=f"gptx.{tool}", cwd=tmp_path))
    assert "over gptx's cap" in line, line
    run_dir = Path(shutil.copytree(completed, tmp_path / "huge_run"))
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(huge_config(config.read_text()))
    if tool != "compare":  # compare checks a run folder's file against its result.json, never building a model
        line = one_error_line(run_gptx(*tool_args(tool, run_dir, tmp_path, completed), module=f"gptx.{tool}",
                                       cwd=tmp_path))
        assert "over gptx's cap" in line, line
    assert not (tmp_path / "hf").exists()


def test_the_cap_is_one_number(completed, tmp_path):
    """reproduce refuses at the same cap (and still lets --allow-large past it)."""
    run_dir = Path(shutil.copytree(completed, tmp_path / "run"))
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(huge_config(config.read_text()))
    line = one_error_line(run_gptx(str(run_dir), "--allow-config-change", module="gptx.reproduce", cwd=tmp_path))
    assert f"gptx's cap of {MAX_PARAMETERS:.3g}" in line and "--allow-large" in line, line


@pytest.mark.parametrize("tool", TOOLS)
def test_a_weights_header_of_tens_of_megabytes_is_refused_unread(completed, tmp_path, tool):
    lone = tmp_path / "padded.safetensors"
    save_file({"tok_emb.weight": torch.zeros(4, 4)}, str(lone), metadata={"padding": "x" * (40 << 20)})
    with open(lone, "rb") as f:
        assert int.from_bytes(f.read(8), "little") > SAFETENSORS_HEADER_LIMIT
    start = time.perf_counter()
    line = one_error_line(run_gptx(*tool_args(tool, lone, tmp_path, completed), module=f"gptx.{tool}", cwd=tmp_path))
    elapsed = time.perf_counter() - start
    assert "safetensors header of" in line and "it was not read" in line, line
    assert elapsed < 60, elapsed  # the whole command, interpreter start included
    assert not (tmp_path / "hf").exists()


def test_a_run_folders_oversized_header_is_refused_too(completed, tmp_path):
    """A run folder's model.safetensors, read for its config when .hydra/config.yaml is gone."""
    run_dir = Path(shutil.copytree(completed, tmp_path / "run"))
    (run_dir / ".hydra" / "config.yaml").unlink()
    save_file({"tok_emb.weight": torch.zeros(4, 4)}, str(run_dir / "model.safetensors"),
              metadata={"gptx_config": "x" * (40 << 20)})
    for tool in ("generate", "reproduce"):
        args = [str(run_dir)] + (["--max-new-tokens", "2"] if tool == "generate" else [])
        line = one_error_line(run_gptx(*args, module=f"gptx.{tool}", cwd=tmp_path))
        assert "safetensors header of" in line, line


@pytest.mark.parametrize("value", ["100000", "-1"])
def test_sample_tokens_is_bounded(tmp_path, value):
    run_dir = tmp_path / "run"
    line = one_error_line(run_gptx(*RUN, f"train.sample_tokens={value}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                                   timeout=120))
    assert f"train.sample_tokens={value} must be in [0, 2048]" in line, line
    assert not (run_dir / "result.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_the_sample_ends_it_between_two_tokens(tmp_path, sig):
    """A 256-token context makes each sampled token a forward pass over 256 tokens: 2048 of them take a minute
    or more here. The run is held as its final outputs start, let go, and signalled a second into the sample:
    the sample stops at the next token, the weights and result.json are written, and the run completes."""
    run_dir = tmp_path / "run"
    args = [*TINY, "model.context_length=256", "train.sample_tokens=2048", "train.checkpoint_minutes=null",
            f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "GPTX_FAULT": "final@4=STOP"}
    proc = subprocess.Popen([sys.executable, "-m", "gptx.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _stopped(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never reached its final outputs"
        time.sleep(0.05)
    proc.send_signal(signal.SIGCONT)
    time.sleep(3)  # the test loss (8 sequences) takes a fraction of that; then the sample
    assert proc.poll() is None, "the run ended before its sample was signalled"
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    stopped_after = time.monotonic() - sent
    assert proc.returncode == 0, stderr[-3000:]
    assert stopped_after < 20, f"the run took {stopped_after:.1f} s to stop after {sig.name}"
    got = result(run_dir)
    assert got["status"] == "completed"
    assert any("sample.txt was cut short by a stop signal" in w for w in got["warnings"]), got["warnings"]
    assert (run_dir / "model.safetensors").exists() and "Traceback" not in stderr
    print(f"{sig.name}: the run ended {stopped_after:.2f} s after the signal")


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"

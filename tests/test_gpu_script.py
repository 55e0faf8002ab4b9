"""benchmarks/gpu.sh's CPU dry run: every step of the GPU script runs and its checks pass (no timings asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_script_dry_runs_on_a_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--device", "cpu"], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("IDENTICAL") == 1 and "AGREE" in proc.stdout
    rows = {r["variant"] for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert {"eager", "eager+deterministic", "eager/full-logits-loss", "eager/foreach-adamw"} <= rows
    for i in (1, 2):
        assert json.loads((tmp_path / f"deterministic-{i}" / "result.json").read_text())["status"] == "completed"

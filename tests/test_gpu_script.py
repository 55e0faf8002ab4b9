"""benchmarks/gpu.sh: its CPU dry run passes every phase and writes only the small files to $OUT, and its
wheelhouse installs offline (pip --no-index) into an empty venv (no timings asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
OUT_FILES = {"summary.json", "environment.json", "bench.json", "profile.txt", "log.txt"}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


@pytest.mark.slow
def test_the_gpu_script_dry_runs_every_phase_on_a_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run", "--work", str(work)],
                          capture_output=True, text=True, env=_env(OUT=str(out)), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ALL PASSED" in proc.stdout
    assert {p.name for p in out.iterdir()} == OUT_FILES  # run folders stay in --work
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["phases"]) == ["environment", "bench", "profile", "determinism", "compiled_determinism",
                                       "faults"]
    assert {p["status"] for p in summary["phases"].values()} == {"ok"}
    env = json.loads((out / "environment.json").read_text())
    assert len(env["sdpa_probe"]) == 4 and env["versions"]["torch"] == torch.__version__
    assert {r["gptx"]["kernels"] for r in env["sdpa_probe"] if r["dropout"] > 0} == {"math"}
    rows = {r["variant"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert {"eager", "eager+deterministic", "eager/full-logits-loss"} <= set(rows)
    assert summary["phases"]["bench"]["sliced_loss_agrees"] is True
    determinism = summary["phases"]["determinism"]
    assert determinism["checks"] == {"eager_identical": True, "stopped_by_sigterm": True, "resumed_identical": True}
    assert determinism["resumed"] == determinism["eager"][0]
    assert json.loads((work / "runs" / "resumed" / "result.json").read_text())["status"] == "completed"
    assert "aten::" in (out / "profile.txt").read_text()


def test_a_failed_phase_is_recorded_and_the_next_one_still_runs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_checks.py"), "--dry-run", "--only",
                           "bench,environment", "--timeout", "bench=0.01", "--work", str(tmp_path / "work"),
                           "--out", str(out)], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    phases = json.loads((out / "summary.json").read_text())["phases"]
    assert phases["bench"]["status"] == "timeout" and phases["environment"]["status"] == "ok"
    assert "SOME FAILED" in proc.stdout


@pytest.mark.slow
def test_the_wheelhouse_installs_offline_into_an_empty_venv(tmp_path):
    """The device image has python3 and torch and nothing of gptx's: an empty venv here that sees only this
    venv's torch (and torch's own dependencies) stands for it. The wheelhouse is built for this Python
    (the device's is 3.12: same script, --python-version), then installed with --no-index, and a tiny
    training run goes through."""
    wheels = tmp_path / "wheelhouse"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    build = subprocess.run(["bash", str(REPO / "benchmarks" / "build_wheelhouse.sh"), "--python-version", version,
                            "--out", str(wheels)], capture_output=True, text=True, env=_env(), timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert sum(p.stat().st_size for p in wheels.iterdir()) < 40 * 2**20
    assert any(p.name.startswith("antlr4_python3_runtime-4.9.3-py3-none-any") for p in wheels.iterdir())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # torch and only its own dependencies, as on the device image, through a .pth of symlinks.
    torch_only = tmp_path / "torch-only"
    torch_only.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    keep = ("torch", "torchgen", "functorch", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "filelock",
            "fsspec", "typing_extensions", "nvidia", "triton")
    for entry in site.iterdir():
        if entry.name.split("-")[0].split(".")[0].lower() in keep:
            (torch_only / entry.name).symlink_to(entry)
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    (venv_site / "torch_only.pth").write_text(f"{torch_only}\n")
    assert subprocess.run([str(python), "-c", "import hydra"], capture_output=True).returncode != 0
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-cache-dir",
                              "--find-links", str(wheels), "-r", str(REPO / "benchmarks" / "gpu-requirements.txt")],
                             capture_output=True, text=True, timeout=600,
                             env={**_env(), "PIP_CONFIG_FILE": os.devnull, "PIP_CONSTRAINT": ""})
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    run = subprocess.run([str(python), "-m", "gptx.train", "model.d_model=32", "model.n_heads=2", "model.n_layers=1",
                          "model.context_length=32", "train.batch_size=2", "train.max_steps=2", "train.eval_every=2",
                          "train.eval_batches=1", "train.sample_tokens=3", "data.test_sequences=2",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env=_env(PYTHONPATH=str(REPO)))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"

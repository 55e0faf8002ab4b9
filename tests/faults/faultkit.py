"""Helpers shared by the fault-scenario tests (tests/faults/test_NN_*.py, one file per scenario listed
in docs/guarantees.md).

A plain module, not a conftest.py: conftest files outside packages all import as `conftest`, so a
second one here would shadow tests/conftest.py for every test collected after it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gptx.data import BUNDLED_CORPUS

from conftest import TINY, run_gptx, typed_config  # noqa: F401 - re-exported for the tests

# Registers the runs-table callback until gptx/conf/config.yaml does so itself (`++` adds or replaces).
CALLBACK = "++hydra.callbacks.sweep._target_=gptx.sweep.SweepCallback"
# A run with checkpoints every 2 steps that ends after 6, evaluating at steps 3 and 6. TINY keeps
# model.dropout at its default of 0.1, so the dropout RNG streams must survive every resume.
RUN = [*TINY, "train.max_steps=6", "train.checkpoint_every=2", "train.eval_every=3"]
# A run that completes in seconds: the folder the tests of finished runs damage, read or relaunch.
SHORT = [*TINY, "train.max_steps=2"]
# Local process-pool launcher on CPU, two jobs at a time: every job its own process.
LOCAL = ["hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2"]


def result(run_dir: Path) -> dict:
    """The run's result.json."""
    return json.loads((run_dir / "result.json").read_text())


def per_step(run_dir: Path) -> list[tuple]:
    """(step, train_loss, val_loss) for every line of metrics.jsonl, in file order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in map(json.loads, lines)]


def assert_identical(run_dir: Path, reference: Path) -> None:
    """Completed, and bit-identical to the reference: final weights, test loss, every step's losses."""
    got, want = result(run_dir), result(reference)
    assert got["status"] == "completed", got.get("error")
    assert got["final_weights_sha256"] == want["final_weights_sha256"]
    assert got["test_loss"] == want["test_loss"]
    steps = per_step(run_dir)
    assert steps == per_step(reference)
    assert len({s for s, *_ in steps}) == len(steps)  # each step logged once, resume or not
    assert not (run_dir / "checkpoints").exists()  # removed once the run completed


def cli_run(run_dir: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 600):
    """`python -m gptx.train RUN… overrides hydra.run.dir=run_dir` in run_dir's parent."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return run_gptx(*RUN, *overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, env=env,
                    timeout=timeout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of RUN, the yardstick an interrupted one must match (import it to use it)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = cli_run(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run of RUN killed right after its step-4 checkpoint: checkpoints at steps 2 and 4 (import it to use it)."""
    from gptx.checkpoint import list_checkpoints

    run_dir = tmp_path_factory.mktemp("killed") / "run"
    proc = cli_run(run_dir, env={"GPTX_FAULT": "checkpoint@4=KILL"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000002", "step_00000004"]
    return run_dir


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    """A completed run of SHORT in a folder of its own, one per test module (import it to use it)."""
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    proc = run_gptx(*SHORT, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def tree_digest(folder: Path, mtimes: bool = True) -> dict[str, str]:
    """sha256 (and, by default, mtime) of every file under folder, hidden ones included."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            + (f"@{p.stat().st_mtime_ns}" if mtimes else "")
            for p in sorted(folder.rglob("*")) if p.is_file()}


def saved_config(run_dir: Path) -> dict:
    """The run's .hydra/config.yaml (run folder names of TINY sweeps are too long to read keys from)."""
    return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())


def runs_csv(sweep_dir: Path) -> dict[str, dict[str, str]]:
    """runs.csv as {run folder: row}."""
    with (sweep_dir / "runs.csv").open(newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def write_corpus(path: Path, part: int = 0, chars: int = 20_000) -> Path:
    """A small valid UTF-8 corpus: slice `part` of the bundled Tiny Shakespeare."""
    text = BUNDLED_CORPUS.read_text(encoding="utf-8")
    path.write_text(text[part * chars : (part + 1) * chars], encoding="utf-8")
    return path


def write_corrupt_corpus(path: Path) -> Path:
    """A corpus file that is not UTF-8 (a damaged download): passes validation, raises while loading."""
    path.write_bytes(b"\xff\xfe\x00 not UTF-8 \xc3\x28" * 64)
    return path


def python_script(path: Path, body: str) -> Path:
    """Write a script (`sys` imported) that prepares an interpreter, then runs gptx in it."""
    path.write_text(f"import sys\n{body}")
    return path


def run_script(script: Path, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    """Run a script written by python_script the way run_gptx runs a module."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def cli_start(run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m gptx.train TINY… overrides hydra.run.dir=run_dir` (without RUN's checkpoint_every)
    and return at once, so the test can kill it whenever it likes."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "gptx.train", *TINY, *overrides, f"hydra.run.dir={run_dir}"],
                            cwd=run_dir.parent, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)

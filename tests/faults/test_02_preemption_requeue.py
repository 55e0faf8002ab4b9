"""Scenario 2: preemption/timeout signal: checkpoint at a step boundary, requeue, resume, identical
result written once; exceeding `max_num_timeout` is reported incomplete, not done.

Under SLURM, submitit installs its own SIGUSR2 handler (requeue, then `sys.exit`) before it calls
the job. Here a script installs such a handler, then runs `python -m gptx.train -m …` in the same
interpreter; GPTX_FAULT delivers SIGUSR2 before step 3. gptx must only flag it, checkpoint at the
step boundary, and only then call the previous handler, once. The "requeued" job is the same command
again. tests/test_resume.py covers SIGTERM/SIGUSR1 with no previous handler (exit 128 + signal).
Repeated on CUDA when a GPU is present.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml
from faultkit import CALLBACK, RUN, assert_identical, python_script, result, run_script, runs_csv

import gptx.config
from gptx.analysis.runs import scan_runs
from gptx.result import find_run_dirs

pytestmark = pytest.mark.slow

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]

# What submitit's handler amounts to: record the requeue (and what was on disk then), exit 0.
SUBMITIT_LIKE = '''\
import json, os, runpy, signal
from pathlib import Path

def requeue(signum, frame):
    cwd = Path.cwd()
    seen = {"signum": signum,
            "checkpoints": sorted(p.name for p in cwd.rglob("checkpoints/step_*")),
            "statuses": [json.loads(p.read_text())["status"] for p in cwd.rglob("result.json")]}
    with open(os.environ["REQUEUE_LOG"], "a") as f:
        f.write(json.dumps(seen) + "\\n")
    sys.exit(0)

signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["gptx.train", *sys.argv[1:]]
runpy.run_module("gptx.train", run_name="__main__", alter_sys=True)
'''


def launch(script: Path, cwd: Path, device: str, log: Path, fault: str | None = None):
    cwd.mkdir(exist_ok=True)
    env = {"REQUEUE_LOG": str(log), **({"GPTX_FAULT": fault} if fault else {})}
    return run_script(script, "-m", "sweep=preempt", *RUN, f"train.device={device}", CALLBACK, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    return python_script(tmp_path_factory.mktemp("script") / "submitit_like.py", SUBMITIT_LIKE)


@pytest.mark.parametrize("device", DEVICES)
def test_scenario_02_preemption_checkpoints_hands_over_once_and_resumes_identically(script, tmp_path, device):
    log = tmp_path / "requeues.jsonl"
    reference = launch(script, tmp_path / "reference", device, log)
    assert reference.returncode == 0, reference.stderr[-3000:]
    [reference_run] = find_run_dirs(tmp_path / "reference" / "multirun_outputs" / "preempt")

    first = launch(script, tmp_path / "job", device, log, fault="step@3=USR2")
    assert first.returncode == 0, first.stderr[-3000:]  # the previous handler's sys.exit(0)
    sweep = tmp_path / "job" / "multirun_outputs" / "preempt"
    [run_dir] = find_run_dirs(sweep)
    # The previous handler ran once, after the step-2 checkpoint was complete and before gptx wrote
    # its own status: gptx never exits on its own when someone else owns the signal.
    [seen] = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen == {"signum": signal.SIGUSR2, "checkpoints": ["step_00000002"], "statuses": ["running"]}
    assert result(run_dir)["status"] == "interrupted"
    assert f"stop signal {int(signal.SIGUSR2)}: checkpointed at step 2" in (run_dir / "train.log").read_text()
    # Were this the last allowed requeue (max_num_timeout exceeded), the job would end here for good:
    # its folder and the runs table must say incomplete, never done.
    [row] = scan_runs(sweep)
    assert (row["status"], row["error"]) == ("incomplete", "result.json status 'interrupted'")
    assert [(r["status"], r["error"]) for r in runs_csv(sweep).values()] == [
        ("incomplete", "result.json status 'interrupted'")]

    # Requeued: the whole job reruns with the same overrides and resumes from its folder.
    second = launch(script, tmp_path / "job", device, log)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(log.read_text().splitlines()) == 1  # no second hand-over
    assert find_run_dirs(sweep) == [run_dir]  # one result folder, not one per attempt
    assert "resuming from step_00000002 (step 2 of 6)" in (run_dir / "train.log").read_text()
    assert_identical(run_dir, reference_run)
    assert [row["status"] for row in runs_csv(sweep).values()] == ["completed"]



def test_scenario_02_the_slurm_presets_requeue_on_timeout():
    """hydra-submitit-launcher's max_num_timeout defaults to 0 (a timed-out job is never requeued)."""
    presets = sorted((Path(gptx.config.CONF_DIR) / "hydra" / "launcher").glob("slurm*.yaml"))
    assert presets
    for preset in presets:
        assert yaml.safe_load(preset.read_text())["max_num_timeout"] > 0, preset

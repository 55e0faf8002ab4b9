"""Sweeps through SLURM (submitit) on a real single-node SLURM: folders, skips, requeue and resume.

Start SLURM with `bash tests/slurm/start-local-slurm.sh` (Debian, root); where there is none (no
`sinfo`, or no idle node) the tests marked `slurm` skip and say why, except under CI (`CI=true`), where
SLURM must be up and its absence fails them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gptx.config import CONF_DIR
from hydra_plugins.gptx_launchers.slurm import parse_scontrol

from conftest import TINY, run_gptx

# Until gptx/conf/config.yaml registers the callback itself (`++` adds or replaces).
CALLBACK = "++hydra.callbacks.sweep._target_=gptx.sweep.SweepCallback"
# The one-GPU preset, fitted to a CPU-only test node.
SLURM = ("hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", CALLBACK)
# submitit calls a stop signal a timeout when the time limit is under 10 min (else a preemption).
SHORT_LIMIT = ("hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=10")
# TINY, long enough (about 10 s on a CPU) for a signal to land in the middle of training.
LONG = (*TINY, "train.max_steps=120", "train.eval_every=1000")


def slurm_skip_reason() -> str | None:
    """Why SLURM tests cannot run here, or None when a node can take jobs."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo/sbatch not found); start one with tests/slurm/start-local-slurm.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed ({e}); start SLURM with tests/slurm/start-local-slurm.sh"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix") for s in states):
        return f"no idle SLURM node (sinfo: {out.stdout.strip() or out.stderr.strip()!r})"
    return None


SKIP_REASON = slurm_skip_reason()
IN_CI = os.environ.get("CI", "").lower() == "true"


def needs_slurm(test):
    """Run `test` on the local SLURM; without one, skip it, or fail it under CI (a green CI that tested
    nothing on SLURM would be a false promise)."""
    if SKIP_REASON is None:
        return test
    if IN_CI:
        return pytest.mark.usefixtures("_slurm_required_in_ci")(test)
    return pytest.mark.skip(reason=SKIP_REASON)(test)


@pytest.fixture
def _slurm_required_in_ci():
    pytest.fail(f"CI=true but SLURM cannot take jobs: {SKIP_REASON}")


def test_scontrol_lines_give_every_array_task_its_state():
    text = (
        "JobId=3 ArrayJobId=3 ArrayTaskId=4-6%2 JobState=PENDING Reason=JobArrayTaskLimit\n"
        "JobId=5 ArrayJobId=3 ArrayTaskId=1 JobState=RUNNING Reason=None\n"
        "JobId=4 ArrayJobId=3 ArrayTaskId=0 JobState=COMPLETED Reason=None\n"
        "JobId=9 JobName=wrap JobState=FAILED Reason=NonZeroExitCode\n"
    )
    assert parse_scontrol(text) == {"3_4": "PENDING", "3_5": "PENDING", "3_6": "PENDING", "3_1": "RUNNING",
                                    "3_0": "COMPLETED", "9": "FAILED"}


def launcher_config(*overrides: str):
    """The composed hydra.launcher node for these command-line overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.launcher


@pytest.mark.parametrize("preset", ["slurm_gpu", "slurm_node"])
def test_presets_requeue_on_timeout_and_take_command_line_resources(preset):
    default = launcher_config(f"hydra/launcher={preset}")
    assert default._target_ == "hydra_plugins.gptx_launchers.slurm.GptxSlurmLauncher"
    assert default.max_num_timeout > 0 and default.signal_delay_s > 0  # upstream's 0 never requeues a timeout
    launcher = launcher_config(f"hydra/launcher={preset}", "hydra.launcher.partition=gpu",
                               "hydra.launcher.timeout_min=30", "hydra.launcher.gpus_per_node=4",
                               "hydra.launcher.cpus_per_task=6", "hydra.launcher.mem_gb=32",
                               "hydra.launcher.max_num_timeout=3")
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.cpus_per_task,
            launcher.mem_gb, launcher.max_num_timeout) == ("gpu", 30, 4, 6, 32, 3)


def test_local_gpus_preset_is_validated_by_its_schema():
    launcher = launcher_config("hydra/launcher=local_gpus", "hydra.launcher.gpus=[0,1]")
    assert launcher._target_ == "hydra_plugins.gptx_launchers.local_gpus.LocalGpusLauncher"
    assert list(launcher.gpus) == ["0", "1"]
    with pytest.raises(Exception, match="gpus_per_jb"):
        launcher_config("hydra/launcher=local_gpus", "hydra.launcher.gpus_per_jb=2")


def read_results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))}


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_the_sweep_runs_as_slurm_jobs_and_a_relaunch_submits_nothing(tmp_path):
    args = ("-m", *SLURM, "sweep=on_slurm", "intervention=grad_clip,qkv_bias", "init_seed=22,42,67", *TINY,
            "train.max_steps=2")
    proc = run_gptx(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "on_slurm"
    results = read_results(sweep)
    assert len(results) == 6
    assert {(r["intervention"][0], r["init_seed"]) for r in results.values()} == {
        (i, s) for i in ("grad_clip", "qkv_bias") for s in (22, 42, 67)}
    for name, result in results.items():
        assert result["status"] == "completed" and result["steps"] == 2, name
        assert f"init_seed={result['init_seed']}" in name and f"intervention={result['intervention'][0]}" in name
        assert (sweep / name / ".hydra" / "config.yaml").is_file() and (sweep / name / "model.safetensors").is_file()
    assert any((sweep / ".submitit").iterdir())
    with (sweep / "runs.csv").open() as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["completed"] * 6
    assert "slurm: 6 jobs: 6 completed" in proc.stdout

    again = run_gptx(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "slurm: 6 jobs: 6 completed; 6 skipped" in again.stdout and "Submitted SLURM" not in again.stderr


def reference_run(tmp_path: Path) -> dict:
    """The same run, uninterrupted and without SLURM: what a resumed run must reproduce exactly."""
    proc = run_gptx(*LONG, "init_seed=42", f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / "reference" / "result.json").read_text())


def start_sweep(tmp_path: Path, name: str, *extra: str) -> subprocess.Popen:
    """Start a one-run SLURM sweep in the background (time limit 15 min unless `extra` sets one)."""
    limit = () if any("timeout_min" in e for e in extra) else ("hydra.launcher.timeout_min=15",)
    return subprocess.Popen(
        [sys.executable, "-m", "gptx.train", "-m", *SLURM, *limit, f"sweep={name}", "init_seed=42", *LONG,
         *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"},
    )


def wait_for_training(sweep: Path, min_steps: int, timeout_s: float = 120) -> tuple[Path, str]:
    """Wait until the sweep's one run has logged `min_steps` steps; return its folder and SLURM job id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = list(sweep.glob("*/metrics.jsonl"))
        # submitit files a one-job sweep as a plain job (`.submitit/<id>`), more as an array (`<id>_<i>`).
        jobs = sorted((p.name for p in sweep.glob(".submitit/*") if re.fullmatch(r"\d+(_\d+)?", p.name)),
                      key=lambda name: "_" not in name)
        if metrics and jobs and len(metrics[0].read_text().splitlines()) >= min_steps:
            return metrics[0].parent, jobs[0]
        time.sleep(0.2)
    raise AssertionError(f"no run in {sweep} reached step {min_steps} within {timeout_s}s")


def release_requeued(job_id: str, timeout_s: float = 120) -> None:
    """SLURM holds a requeued job for about two minutes (Reason=BeginTime); let it start now."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        if "JobState=PENDING" in out and "Reason=BeginTime" in out:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} was not requeued within {timeout_s}s")


def restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    match = re.search(r"Restarts=(\d+)", out)
    return int(match.group(1)) if match else -1


@pytest.mark.parametrize(("said", "params", "key"), [
    ("sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: Invalid "
     "partition name specified", {"partition": "gpu"}, "partition"),
    ("sbatch: error: Batch job submission failed: Requested node configuration is not available",
     {"gpus_per_node": 8, "mem_gb": None}, "gpus_per_node"),
    ("sbatch: error: Memory specification can not be satisfied", {"mem_gb": 4096}, "mem_gb"),
    ("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some "
     "limit)", {"timeout_min": 99999}, "timeout_min"),
])
def test_sbatchs_refusal_names_the_launcher_key(said, params, key):
    from submitit.core.utils import FailedJobError

    from hydra_plugins.gptx_launchers.slurm import sbatch_refusal

    err = FailedJobError(said)
    err.__cause__ = subprocess.CalledProcessError(1, ["sbatch"], output="", stderr=said)
    line = sbatch_refusal(err, params)
    assert line.startswith("sbatch refused the job: " + said.splitlines()[0].removeprefix("sbatch: error: "))
    assert line.endswith(f"; check hydra.launcher.{key}") and "\n" not in line


@pytest.mark.slurm
@needs_slurm
def test_a_partition_the_cluster_lacks_is_one_line_and_nothing_is_left(tmp_path):
    proc = run_gptx("-m", *SLURM, "hydra.launcher.partition=no_such_partition", "init_seed=22,42", "sweep=refused",
                    *TINY, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr == (  # sbatch's words once, not echoed by submitit, no traceback
        "gptx: error: sbatch refused the job: invalid partition specified: no_such_partition; Batch job "
        "submission failed: Invalid partition name specified; check hydra.launcher.partition\n")
    assert not (tmp_path / "multirun_outputs" / "refused" / "runs.csv").exists()


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
@pytest.mark.parametrize("how", ["timeout_signal", "scontrol_requeue"])
def test_an_interrupted_job_is_requeued_resumes_and_ends_as_if_never_stopped(tmp_path, how):
    sweep_proc = start_sweep(tmp_path, "requeue", *(SHORT_LIMIT if how == "timeout_signal" else ()))
    run_dir, job_id = wait_for_training(tmp_path / "multirun_outputs" / "requeue", min_steps=10)
    if how == "timeout_signal":  # what SLURM sends signal_delay_s before the time limit (sent early here)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    else:  # what an admin or preemption does: SIGTERM now, requeue
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    release_requeued(job_id)
    reference = reference_run(tmp_path)
    out, _ = sweep_proc.communicate(timeout=600)
    assert sweep_proc.returncode == 0, out[-4000:]
    assert restarts(job_id) >= 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 120
    assert "resuming from" in (run_dir / "train.log").read_text()
    assert result["final_weights_sha256"] == reference["final_weights_sha256"]
    assert result["test_loss"] == reference["test_loss"]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 121))  # every step logged once, none twice after the resume


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_past_max_num_timeout_the_run_is_not_done_and_the_same_command_finishes_it(tmp_path):
    sweep_proc = start_sweep(tmp_path, "give_up", *SHORT_LIMIT, "hydra.launcher.max_num_timeout=0")
    run_dir, job_id = wait_for_training(tmp_path / "multirun_outputs" / "give_up", min_steps=10)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    out, _ = sweep_proc.communicate(timeout=600)
    assert sweep_proc.returncode != 0, out[-3000:]
    # submitit refuses the requeue; gptx has checkpointed and reports the run as not done.
    assert "timed-out too many times" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "result.json").read_text())["status"] == "interrupted"
    with (run_dir.parent / "runs.csv").open() as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["incomplete"]
    # Relaunch: the run resumes from its checkpoint and completes.
    again = start_sweep(tmp_path, "give_up")
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-4000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == 120
    assert "resuming from" in (run_dir / "train.log").read_text()
    assert result["final_weights_sha256"] == reference_run(tmp_path)["final_weights_sha256"]


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_a_two_task_slurm_job_is_one_ddp_run(tmp_path):
    # slurm_node's layout (one task per GPU) on this CPU node: two tasks, gloo, one run. The job's time
    # limit is short: a rank stuck at the rendezvous ends the job, and the test fails with the tasks' logs.
    sweep = tmp_path / "multirun_outputs" / "ddp"
    try:
        proc = run_two_task_sweep(tmp_path, timeout=420)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the sweep did not end: {e.stdout!r}\n{task_logs(sweep)}") from None
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:] + task_logs(sweep)
    results = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
    assert len(results) == 1
    assert results[0]["status"] == "completed" and results[0]["world_size"] == 2


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_a_rank_that_cannot_join_ends_the_whole_job_at_once(tmp_path):
    """Rank 0 cannot listen (its rendezvous port is taken): before, rank 1 waited at the rendezvous until
    the job's time limit and the launcher for ever; now the job ends at once and the run reads failed."""
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_two_task_sweep(tmp_path, timeout=300, MASTER_PORT=str(port))
    assert proc.returncode != 0
    assert re.search(r"SLURM job \d+ ended \(FAILED\) without a result", proc.stderr), proc.stderr[-3000:]
    with (tmp_path / "multirun_outputs" / "ddp" / "runs.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["status"] == "failed" and "address already in use" in row["error"]


def run_two_task_sweep(tmp_path: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """One 3-step run as a two-task SLURM job (sweep `ddp`), with a 4-minute job limit."""
    cmd = [sys.executable, "-m", "gptx.train", "-m", *SLURM, "hydra.launcher.tasks_per_node=2",
           "hydra.launcher.timeout_min=4", "sweep=ddp", "init_seed=42", *TINY, "train.max_steps=3"]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **env})


def task_logs(sweep: Path) -> str:
    """The end of every SLURM task's stdout and stderr (submitit's logs), and what SLURM says of the jobs."""
    parts = []
    for log_file in sorted(sweep.glob(".submitit/*/*_log.*")):
        parts.append(f"--- {log_file.name}\n{log_file.read_text(errors='replace')[-3000:]}")
    queue = subprocess.run(["squeue", "-o", "%i %T %r"], capture_output=True, text=True).stdout
    return "\n".join([*parts, f"--- squeue\n{queue}"])


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.ddp
@needs_slurm
def test_plain_srun_tasks_are_one_ddp_run_identical_to_torchrun(tmp_path):
    """`srun --ntasks=2 python -m gptx.train …` (a plain sbatch script's line, multi-node or not) is one run of
    2 processes, bit-identical to the same run under torchrun; before, each task trained alone."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    overrides = [*TINY, "train.max_steps=3"]
    srun = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", f"--chdir={tmp_path}", sys.executable, "-m",
                           "gptx.train", *overrides, f"hydra.run.dir={tmp_path / 'srun'}"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert srun.returncode == 0, (srun.stdout + srun.stderr)[-4000:]
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "gptx.train",
                               *overrides, f"hydra.run.dir={tmp_path / 'torchrun'}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env=env)
    assert torchrun.returncode == 0, (torchrun.stdout + torchrun.stderr)[-4000:]
    a, b = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("srun", "torchrun"))
    assert a["world_size"] == b["world_size"] == 2 and a["status"] == "completed"
    assert a["final_weights_sha256"] == b["final_weights_sha256"]


def test_the_multi_node_preset_runs_a_task_per_gpu_on_every_node():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = ["hydra/launcher=slurm_nodes", "hydra.launcher.nodes=4", "hydra.launcher.gpus_per_node=8"]
        launcher = compose("config", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert launcher.max_num_timeout > 0 and launcher._target_.endswith("GptxSlurmLauncher")


@pytest.mark.slurm
@pytest.mark.slow
@needs_slurm
def test_an_adaptive_sweep_submits_each_wave_as_slurm_jobs_and_resumes(tmp_path):
    """Each wave is one submitit array; the sweep stops where its plan says, and the same command after
    a finished sweep submits nothing."""
    args = ("-m", *SLURM, "sweep=adaptive_slurm", "hydra/sweeper=adaptive", "intervention=baseline,grad_clip,qkv_bias",
            "init_seed=1,2", "hydra.sweeper.max_seeds=3", "hydra.sweeper.wave_size=1",
            "hydra.sweeper.min_effect=1e-6", *TINY, "train.max_steps=2")
    proc = run_gptx(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "adaptive_slurm"
    state = json.loads((sweep / "adaptive.json").read_text())
    results = read_results(sweep)
    # grad_clip is identical to the baseline at wave 1; qkv_bias gets wave 2's seed 3, with the baseline
    assert state["arms"]["grad_clip"]["status"] == "identical to the baseline"
    assert sorted((r["intervention"][0], r["init_seed"]) for r in results.values()) == sorted(
        [("baseline", 1), ("baseline", 2), ("baseline", 3), ("grad_clip", 1), ("grad_clip", 2),
         ("qkv_bias", 1), ("qkv_bias", 2), ("qkv_bias", 3)])
    assert state["runs_used"] == 8 and state["next_cells"] is None
    assert (proc.stdout + proc.stderr).count("Submitted SLURM") == 2  # one array a wave

    again = run_gptx(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Submitted SLURM" not in again.stdout + again.stderr and read_results(sweep) == results

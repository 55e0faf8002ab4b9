"""hydra/launcher=local_gpus: slots, GPU pinning, concurrency, failures, stopping, and real gptx sweeps.

Scheduling is tested on CPU with a faked GPU list (`hydra.launcher.gpus=[0,1]`) and a stand-in app
(tests/launcher_app) that records the CUDA_VISIBLE_DEVICES it saw and when it ran.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra_plugins.gptx_launchers.local_gpus import detect_gpus, make_slots

from conftest import REPO, TINY, run_gptx

APP = REPO / "tests" / "launcher_app" / "app.py"
# Until gptx/conf/config.yaml registers the callback itself (`++` adds or replaces).
CALLBACK = "++hydra.callbacks.sweep._target_=gptx.sweep.SweepCallback"


def run_app(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the stand-in app's multirun on the local_gpus launcher."""
    return subprocess.run(
        [sys.executable, str(APP), "-m", "hydra/launcher=local_gpus", f"hydra.searchpath=[file://{REPO}/gptx/conf]",
         *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_slots_split_gpus_by_gpus_per_job():
    assert make_slots(["0", "1", "2", "3"], 1, None) == [("0",), ("1",), ("2",), ("3",)]
    assert make_slots(["0", "1", "2", "3"], 2, None) == [("0", "1"), ("2", "3")]
    assert make_slots(["0", "1", "2"], 2, None) == [("0", "1")]  # GPU 2 idle, with a warning
    assert make_slots(["0", "1", "2", "3"], 1, 3) == [("0",), ("1",), ("2",)]


def test_no_gpu_gives_max_parallel_cpu_slots():
    assert make_slots([], 1, None) == [()]
    assert make_slots([], 1, 3) == [(), (), ()]


@pytest.mark.parametrize(("gpus", "per_job", "parallel", "message"), [
    (["0"], 2, None, "gpus_per_job=2 but only 1 GPU"),
    (["0"], 0, None, "gpus_per_job=0 must be >= 1"),
    ([], 1, 0, "max_parallel=0 must be >= 1"),
])
def test_impossible_slots_name_the_setting(gpus, per_job, parallel, message):
    with pytest.raises(ValueError, match=message):
        make_slots(gpus, per_job, parallel)


@pytest.mark.parametrize(("visible", "expected"), [
    ("2,3", ["2", "3"]),
    ("", []),
    ("0,-1,2", ["0"]),  # CUDA stops at the first invalid id
    ("GPU-1a2b, GPU-3c4d", ["GPU-1a2b", "GPU-3c4d"]),
])
def test_detected_gpus_follow_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert detect_gpus() == expected


def test_no_nvidia_smi_means_no_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert detect_gpus() == []


@pytest.mark.slow
def test_each_job_gets_its_own_gpu_and_at_most_one_job_per_gpu(tmp_path):
    proc = run_app("hydra.launcher.gpus=[0,1]", "init_seed=1,2,3,4,5", "sleep_s=1.5", "sweep=pool",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(tmp_path / "multirun_outputs" / "pool")
    assert len(runs) == 5 and all(r["status"] == "completed" for r in runs)
    assert {r["cuda_visible_devices"] for r in runs} == {"0", "1"}
    intervals = [(r["start"], r["end"]) for r in runs]
    assert max_overlap(intervals) == 2  # both GPUs busy at once, never a third job
    for a in runs:  # jobs that overlapped in time ran on different GPUs
        for b in runs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    for run_dir in (tmp_path / "multirun_outputs" / "pool").glob("init_seed=*"):
        assert "running on CUDA_VISIBLE_DEVICES" in (run_dir / "console.log").read_text()
    table = proc.stdout
    assert "run" in table and "test_loss" in table and "console.log" in table
    assert "local_gpus: 5 jobs: 5 completed" in table
    # a line as each job ends, counted up to the whole sweep
    done = [line for line in table.splitlines() if line.startswith("local_gpus: ") and " done: " in line]
    assert [line.split()[1] for line in done] == [f"{k}/5" for k in range(1, 6)]
    assert all(" completed" in line for line in done)


@pytest.mark.slow
def test_gpus_per_job_pins_groups_of_gpus(tmp_path):
    proc = run_app("hydra.launcher.gpus=[0,1,2,3]", "hydra.launcher.gpus_per_job=2", "init_seed=1,2,3",
                   "sleep_s=1", "sweep=pairs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(tmp_path / "multirun_outputs" / "pairs")
    assert {r["cuda_visible_devices"] for r in runs} == {"0,1", "2,3"}
    assert {r["world_size"] for r in runs} == {2}  # one process per GPU of the slot (torch.distributed.run)
    assert max_overlap([(r["start"], r["end"]) for r in runs]) == 2


@pytest.mark.slow
def test_cpu_only_runs_max_parallel_jobs_with_gpus_hidden(tmp_path):
    proc = run_app("hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2", "init_seed=1,2,3,4",
                   "sleep_s=1.5", "sweep=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = results(tmp_path / "multirun_outputs" / "cpu")
    assert [r["cuda_visible_devices"] for r in runs] == [""] * 4
    assert max_overlap([(r["start"], r["end"]) for r in runs]) == 2
    assert {r["omp_num_threads"] for r in runs} == {os.environ.get("OMP_NUM_THREADS") or
                                                     str(max(1, (os.cpu_count() or 1) // 2))}
    # Inductor's compile workers: the job's share of the CPUs, not one per CPU in every job.
    assert {r["inductor_compile_threads"] for r in runs} == {os.environ.get("TORCHINDUCTOR_COMPILE_THREADS") or
                                                              str(max(1, (os.cpu_count() or 1) // 2))}


def test_the_end_of_launch_table_speaks_runs_csv(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    from gptx.analysis.runs import CSV_FIELDS, format_table, load_run, run_row
    from hydra_plugins.gptx_launchers.jobs import LAUNCH_COLUMNS, Job, format_job_table

    def job(name, result=None, **kwargs):
        (tmp_path / name).mkdir()
        if result is not None:
            (tmp_path / name / "result.json").write_text(json.dumps(result))
        return Job(0, [], None, tmp_path / name, **kwargs)

    finished = JobReturn(status=JobStatus.COMPLETED)
    jobs = [job("ok", {"status": "completed", "test_loss": 3.5, "wall_seconds": 12.0}, job_return=finished),
            job("old", {"status": "completed", "test_loss": 3.6, "wall_seconds": 11.0}, skipped=True),
            job("nan", {"status": "diverged", "error": "non-finite loss"}, job_return=finished),
            job("died", None, job_return=JobReturn(status=JobStatus.FAILED), wall_s=4.0, ended_how="exit code 3"),
            job("queued")]
    assert format_job_table(jobs, tmp_path).splitlines() == [
        "run     status      test_loss  wall_seconds  this_launch  error                  log",
        "ok      completed   3.5000     12.0000       ran                                 -",
        "old     completed   3.6000     11.0000       skipped                             -",
        "nan     diverged                             ran          non-finite loss        -",
        "died    incomplete             4.0000        ran          crashed (exit code 3)  -",
        "queued  incomplete                           not started  no result.json         -",
        "local_gpus: 5 jobs: 2 completed, 1 diverged, 2 incomplete; 1 skipped (completed with the same config)"]
    # runs.csv's column names and statuses, and the sweep's own table renders it
    assert set(LAUNCH_COLUMNS) - set(CSV_FIELDS) == {"this_launch", "log"}
    assert format_job_table(jobs[:1], tmp_path).splitlines()[:2] == format_table(
        [run_row(load_run(tmp_path / "ok"), tmp_path) | {"this_launch": "ran", "log": "-"}],
        LAUNCH_COLUMNS).splitlines()


@pytest.mark.slow
def test_a_raise_an_exit_and_a_kill_leave_the_other_runs_done_and_exit_non_zero(tmp_path):
    proc = run_app("hydra.launcher.gpus=[0,1]", "mode=ok,raise,exit,kill", "init_seed=1", "sleep_s=0.5",
                   "sweep=faults", cwd=tmp_path)
    assert proc.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "faults"
    statuses = {r["mode"]: r["status"] for r in _runs_csv(sweep)}
    assert statuses == {"ok": "completed", "raise": "failed", "exit": "incomplete", "kill": "incomplete"}
    assert "crashed (exit code 3)" in proc.stdout and "crashed (killed by SIGKILL)" in proc.stdout
    assert "RuntimeError: asked to fail" in (sweep / "mode=raise" / "console.log").read_text()
    assert "local_gpus: 4 jobs:" in proc.stdout


def _runs_csv(sweep: Path) -> list[dict]:
    rows = list(csv.DictReader((sweep / "runs.csv").open()))
    for row in rows:
        row["mode"] = row["run"].split("mode=")[1]
    return rows


def test_jobs_that_would_share_a_folder_are_refused_before_any_runs(tmp_path):
    # `overwrite` is left out of folder names, so these two jobs would write into one folder.
    proc = run_app("hydra.launcher.gpus=[]", "overwrite=true,false", "sweep=dup", cwd=tmp_path)
    assert proc.returncode != 0
    assert "would share the run folder" in proc.stderr
    assert not list((tmp_path / "multirun_outputs" / "dup").glob("*/result.json"))


def test_jobs_that_would_share_a_folder_are_refused_on_hydras_basic_launcher_too(tmp_path):
    # gptx itself on Hydra's own launcher: refused in one line before any folder exists.
    proc = run_gptx("-m", *TINY, "sweep=dup", "train.checkpoint_every=1,2", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("gptx: error: jobs #0 and #1 would share the run folder ")
    assert not (tmp_path / "multirun_outputs").exists()


def test_stopping_the_launcher_stops_its_jobs(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, str(APP), "-m", "hydra/launcher=local_gpus", f"hydra.searchpath=[file://{REPO}/gptx/conf]",
         "hydra.launcher.gpus=[0,1]", "hydra.launcher.stop_grace_s=5", "init_seed=1,2", "sleep_s=60",
         "sweep=stop"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sweep = tmp_path / "multirun_outputs" / "stop"
    pids = _wait_for_pids(sweep, 2, timeout_s=60)
    launcher.send_signal(signal.SIGTERM)
    out, _ = launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    _assert_gone(pids)
    assert "Stopping 2 running job(s)" in out


def test_a_killed_launcher_takes_its_jobs_with_it(tmp_path):
    launcher = subprocess.Popen(
        [sys.executable, str(APP), "-m", "hydra/launcher=local_gpus", f"hydra.searchpath=[file://{REPO}/gptx/conf]",
         "hydra.launcher.gpus=[0,1]", "init_seed=1,2", "sleep_s=60", "sweep=orphans"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pids = _wait_for_pids(tmp_path / "multirun_outputs" / "orphans", 2, timeout_s=60)
    launcher.kill()
    launcher.wait()
    _assert_gone(pids)  # no orphan keeps writing into a run folder a relaunch will use


def _wait_for_pids(sweep: Path, n: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in results(sweep) if r.get("status") == "running"] if sweep.exists() else []
        if len(runs) == n:
            return [r["pid"] for r in runs]
        time.sleep(0.2)
    raise AssertionError(f"{n} jobs did not start in {timeout_s}s")


def _assert_gone(pids: list[int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.2)
    assert not alive, f"jobs {alive} outlived their launcher"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_real_sweep_runs_side_by_side_and_a_relaunch_skips_it_untouched(tmp_path):
    args = ("-m", "hydra/launcher=local_gpus", "hydra.launcher.gpus=[]", "hydra.launcher.max_parallel=2",
            "sweep=side", "init_seed=22,42", *TINY, "train.max_steps=2", CALLBACK)
    first = run_gptx(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "side"
    runs = sorted(sweep.glob("*init_seed=*"))
    assert len(runs) == 2 and all(json.loads((r / "result.json").read_text())["status"] == "completed"
                                  for r in runs)
    assert all((r / "console.log").is_file() for r in runs)
    before = {r.name: _tree_digest(r) for r in runs}
    again = run_gptx(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "local_gpus: 2 jobs: 2 completed; 2 skipped" in again.stdout
    assert {r.name: _tree_digest(r) for r in runs} == before  # byte for byte, mtimes included
    with (sweep / "runs.csv").open() as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["completed", "completed"]
    # a key that changes no number (config_sha256 leaves it out): the launcher submits nothing either
    again = run_gptx(*args, "train.checkpoint_minutes=7", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "local_gpus: 2 jobs: 2 completed; 2 skipped" in again.stdout
    assert {r.name: _tree_digest(r) for r in runs} == before


# A stand-in for torchrun: its worker runs in a session of its own; on SIGTERM it would SIGKILL the worker
# after 0.5 s (torchrun's own grace is 30 s), else it waits for the worker and exits with it.
_TORCHRUN = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True)
def term(*_):
    time.sleep(0.5)
    worker.kill()
    sys.exit(1)
signal.signal(signal.SIGTERM, term)
sys.exit(worker.wait())
"""
# The worker: on SIGTERM it "checkpoints" for 2 s, writes a marker and exits (or ignores SIGTERM).
_WORKER = """
import signal, sys, time
from pathlib import Path
def term(*_):
    time.sleep(2)
    Path(sys.argv[1]).write_text("checkpointed")
    sys.exit(0)
signal.signal(signal.SIGTERM, term if not sys.argv[1].endswith("ignore") else signal.SIG_IGN)
Path(sys.argv[1] + ".started").write_text("")
time.sleep(120)
"""


def _multi_gpu_job(tmp_path: Path, marker: Path):
    from hydra_plugins.gptx_launchers.jobs import Job

    job = Job(0, [], None, tmp_path)  # type: ignore[arg-type]
    job.proc = subprocess.Popen([sys.executable, "-c", _TORCHRUN, _WORKER, str(marker)], start_new_session=True)
    deadline = time.monotonic() + 30
    while not Path(f"{marker}.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return job


def test_stopping_a_multi_gpu_job_gives_its_workers_the_whole_grace(tmp_path):
    from hydra_plugins.gptx_launchers.local_gpus import _stop_jobs, descendants

    marker = tmp_path / "worker"
    job = _multi_gpu_job(tmp_path, marker)
    workers = descendants(job.proc.pid)
    assert len(workers) == 1
    _stop_jobs([job], grace_s=20)
    assert marker.read_text() == "checkpointed"  # not killed by the stand-in's 0.5 s
    _assert_gone(workers)


def test_a_worker_that_outlives_the_grace_is_killed_not_orphaned(tmp_path):
    from hydra_plugins.gptx_launchers.local_gpus import _stop_jobs, descendants

    marker = tmp_path / "worker.ignore"
    job = _multi_gpu_job(tmp_path, marker)
    workers = descendants(job.proc.pid)
    start = time.monotonic()
    _stop_jobs([job], grace_s=1.5)
    assert time.monotonic() - start < 10
    _assert_gone(workers)
    assert job.proc.poll() is not None

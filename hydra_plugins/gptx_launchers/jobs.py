"""What gptx's launchers share: planning a job (config, run folder, already completed?), its result
for Hydra, and the table printed when every job has ended.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gptx.config import ConfigError, config_sha256
from gptx.files import CONFIG_FILE, CONSOLE_LOG
from gptx.result import Status, completed_with, read_result
from gptx.saved_config import parse_safe_yaml


@dataclass
class Job:
    """One job of the multirun: what to run, where, and how it went."""

    idx: int
    overrides: list[str]
    sweep_config: DictConfig
    run_dir: Path
    skipped: bool = False
    slot: tuple[str, ...] | None = None
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float | None = None
    job_return: JobReturn | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    """Where the job's console output went (default: console.log in its run folder)."""
    ended_how: str | None = None
    """For a job that died without reporting: how (e.g. 'killed by SIGKILL', 'SLURM state NODE_FAIL')."""

    @property
    def console_log(self) -> Path:
        return self.log_path or self.run_dir / CONSOLE_LOG


def plan_job(
    config: DictConfig, hydra_context: HydraContext, idx: int, overrides: list[str], skip_completed: bool
) -> Job:
    """Compose a job's config, find its run folder (inside the sweep) and whether it already completed."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"job_id_for_{idx}"
        sweep_config.hydra.job.num = idx
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # `${hydra:...}` in folder names needs it
    try:
        sweep_dir = Path(str(sweep_config.hydra.sweep.dir))
        run_dir = sweep_dir / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
    finally:
        HydraConfig.instance().cfg = previous
    real_sweep, real_run = os.path.realpath(sweep_dir), os.path.realpath(run_dir)
    if real_run == real_sweep or os.path.commonpath([real_sweep, real_run]) != real_sweep:
        raise ValueError(
            f"job #{idx} ({' '.join(overrides)}) would write to {run_dir}, outside its sweep folder "
            f"{sweep_dir}: an override value with '/' or '..'? (gptx's own hydra.sweep.subdir keeps every "
            "run folder inside its sweep)"
        )
    job = Job(idx=idx, overrides=overrides, sweep_config=sweep_config, run_dir=run_dir)
    if skip_completed:
        result = _completed_result(run_dir, _task_config(sweep_config))
        if result is not None:
            job.skipped = True
            job.job_return = job_return(job, JobStatus.COMPLETED, {**result, "skipped": True})
    return job


def job_return(job: Job, status: JobStatus, value: Any) -> JobReturn:
    """A JobReturn carrying the job's config and working directory, as Hydra's own launchers return it.

    The working directory is the job's, whatever became of it (ran, skipped, died): its run folder under
    `hydra.job.chdir=true`, else the directory the job was started in (this process's, which every job
    inherits).
    """
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(job.sweep_config.hydra, resolve=False)})
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.hydra.runtime.output_dir = str(job.run_dir.absolute())
    chdir = OmegaConf.select(job.sweep_config, "hydra.job.chdir", default=None)
    if chdir is None:  # Hydra's own default: change directory below version_base 1.2, not from it on
        from hydra import version

        chdir = not version.base_at_least("1.2")
    return JobReturn(
        overrides=list(job.overrides), cfg=_task_config(job.sweep_config), hydra_cfg=hydra_cfg,
        working_dir=str(job.run_dir.absolute()) if chdir else os.getcwd(),
        task_name=str(job.sweep_config.hydra.job.name), status=status, _return_value=value,
    )


def _task_config(sweep_config: DictConfig) -> DictConfig:
    """The config the task function receives: everything but the `hydra` node."""
    task_cfg = sweep_config.copy()
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def _completed_result(run_dir: Path, task_cfg: DictConfig) -> dict[str, Any] | None:
    """The run's result when it is done for this config (gptx.result.completed_with, the run's own rule):
    completed, the same config by _same_config, its weights intact (damaged ones: the job trains it again)."""
    record = read_result(run_dir)
    done, _ = completed_with(run_dir, record, lambda _: _same_config(run_dir, task_cfg))
    return record.to_json() if done and record is not None else None


def _same_config(run_dir: Path, task_cfg: DictConfig) -> bool:
    """Whether the saved .hydra/config.yaml is this job's config by the run's own rule, config_sha256: keys
    that change no number (NON_SEMANTIC_KEYS: a tracker, checkpoint cadence, ...) may differ, so a relaunch
    that changes only them submits nothing, as the run itself would skip."""
    try:
        saved = (run_dir / CONFIG_FILE).read_text()
    except (OSError, ValueError):
        return False
    if saved == OmegaConf.to_yaml(task_cfg):
        return True
    try:
        plain = parse_safe_yaml(saved, run_dir)
    except ConfigError:
        return False
    mine = OmegaConf.to_container(task_cfg, resolve=False, enum_to_str=True)
    return isinstance(plain, dict) and config_sha256(plain) == config_sha256(mine)


def check_distinct_run_dirs(jobs: list[Job]) -> None:
    """Refuse a multirun in which two jobs would write into the same run folder."""
    seen: dict[str, Job] = {}
    for job in jobs:
        key = os.path.realpath(job.run_dir)
        if key in seen:
            raise ValueError(
                f"jobs #{seen[key].idx} and #{job.idx} would share the run folder {job.run_dir}: they differ "
                "only in keys left out of the folder name (hydra.job.config.override_dirname.exclude_keys)"
            )
        seen[key] = job


LAUNCH_COLUMNS = ("run", "status", "test_loss", "wall_seconds", "this_launch", "error", "log")
"""The end-of-launch table: runs.csv's columns and statuses (gptx.analysis.runs.run_row), plus what this launch did
with the job (ran, skipped: completed with the same config, not started) and where its console log is."""


def job_row(job: Job, sweep_dir: Path) -> dict[str, Any]:
    """A job's row as runs.csv has it, with what the launcher saw: how a job died without a result, the
    wall time of one that never wrote it, and what this launch did with the job."""
    from gptx.analysis.runs import load_run, run_row  # the one row of a run, for runs.csv and every table

    row = run_row(load_run(job.run_dir), sweep_dir)
    ret = job.job_return
    skipped = job.skipped or (ret is not None and ret.status == JobStatus.COMPLETED
                              and isinstance(ret._return_value, dict) and bool(ret._return_value.get("skipped")))
    row["this_launch"] = "skipped" if skipped else "ran" if ret is not None else "not started"
    if row["status"] == Status.INCOMPLETE and job.ended_how:
        row["error"] = f"crashed ({job.ended_how})"
    if row["wall_seconds"] is None and job.wall_s is not None:
        row["wall_seconds"] = job.wall_s
    row["log"] = str(job.console_log) if job.console_log.exists() else "-"
    return row


def announce_done(job: Job, done: int, total: int, label: str) -> None:
    """One line as each job ends, so a long sweep is never silent: 'local_gpus: 3/9 done: RUN completed
    test_loss 3.6812 (12:04)', with the error of a run that did not complete."""
    from gptx.progress import clock  # the training log's h:mm:ss

    row = job_row(job, job.run_dir.parent)
    loss, wall = row["test_loss"], row["wall_seconds"]
    print(f"{label}: {done}/{total} done: {job.run_dir.name} {row['status']}"
          + (f" test_loss {loss:.4f}" if isinstance(loss, (int, float)) and not isinstance(loss, bool) else "")
          + (f" ({clock(wall)})" if isinstance(wall, (int, float)) else "")
          + (f": {row['error']}" if row["status"] != Status.COMPLETED and row["error"] else ""), flush=True)


def format_job_table(jobs: list[Job], sweep_dir: Path, label: str = "local_gpus") -> str:
    """The end-of-launch table (LAUNCH_COLUMNS, rendered as the sweep's runs table), then a count line:
    'local_gpus: 3 jobs: 2 completed, 1 failed; 1 skipped'."""
    from gptx.analysis.runs import format_table

    rows = [job_row(job, sweep_dir) for job in jobs]
    statuses = [r["status"] for r in rows]
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    skipped = sum(r["this_launch"] == "skipped" for r in rows)
    return (format_table(rows, LAUNCH_COLUMNS) + f"\n{label}: {len(jobs)} jobs: "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + (f"; {skipped} skipped (completed with the same config)" if skipped else ""))


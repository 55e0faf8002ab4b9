"""hydra-submitit-launcher's SLURM launcher, made to report every run: the target of gptx's SLURM presets.

`python -m gptx.train -m hydra/launcher=slurm_gpu hydra.launcher.partition=gpu init_seed=22,42,67`

Same config keys and job mechanics as `hydra/launcher=submitit_slurm` (requeue on timeout/preemption
included), with five changes:
- completed runs with the same config are not submitted again (relaunching a sweep finishes it);
- two jobs that would share a run folder, or a run folder outside the sweep, stop the launch first;
- it waits for every job, and one failed or killed job is a failed result, not an exception that
  abandons the others;
- a job's end is also read from `scontrol`, so a job killed without a result file is noticed even on
  a cluster without accounting (submitit asks `sacct`, and would wait forever there);
- a job of several tasks (one DDP run) ends as soon as one task fails (`srun --kill-on-bad-exit`):
  the others would otherwise wait at the rendezvous or the next collective until the time limit.
"""

# No `from __future__ import annotations`: see jobs.py.
import contextlib
import io
import logging
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from gptx.errors import exit_with
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from .jobs import Job, announce_done, check_distinct_run_dirs, format_job_table, job_return, plan_job

log = logging.getLogger(__name__)

# SLURM states after which a job will not run again (a requeued job passes through REQUEUED/PENDING).
TERMINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "GONE",
}
POLL_S = 1.0  # result files are checked this often (cheap: a stat)
SCONTROL_EVERY_S = 10.0  # SLURM is asked this often, once per array (cheap for slurmctld)
GRACE_S = 15.0  # a job must look ended this long without a result file before it counts as dead


class GptxSlurmLauncher(SlurmLauncher):
    """submitit_slurm that skips completed runs, waits for all jobs and reports each one's outcome."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the runs not yet completed as one job array, wait for all, return every result."""
        import submitit  # lazy, as upstream: plugin discovery imports this module on every Hydra start

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = [plan_job(self.config, self.hydra_context, initial_job_idx + i, list(o), True)
                for i, o in enumerate(job_overrides)]
        check_distinct_run_dirs(jobs)
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
        for job in jobs:
            note = "  (skipped: completed, same config)" if job.skipped else ""
            log.info("\t#%d : %s%s", job.idx, " ".join(filter_overrides(job.overrides)), note)
        to_run = [job for job in jobs if not job.skipped]
        if to_run:
            executor = self._executor(submitit)
            state = Singleton.get_state()
            params = [(job.overrides, "hydra.sweep.dir", job.idx, f"job_id_for_{job.idx}", state)
                      for job in to_run]
            said = io.StringIO()  # submitit echoes a refusing sbatch's stderr: it is said once, below
            try:
                with contextlib.redirect_stderr(said):
                    submitted = executor.map_array(self, *zip(*params, strict=True))
            except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError,
                    subprocess.CalledProcessError) as err:
                self._refuse(sbatch_refusal(err, self.params))
            sys.stderr.write(said.getvalue())
            log.info("Submitted SLURM job(s) %s", ", ".join(s.job_id for s in submitted))
            wait_for_jobs(to_run, submitted)
        print(format_job_table(jobs, sweep_dir, label="slurm"), flush=True)
        return [job.job_return for job in jobs]  # type: ignore[misc]

    def _refuse(self, message: str) -> None:
        """One line and exit 2 before any job ran; the sweep callback writes nothing (as the adaptive sweeper's
        refusal): submitit's ~40 lines of traceback would bury sbatch's own reason."""
        for callback in getattr(getattr(self.hydra_context, "callbacks", None), "callbacks", []):
            if hasattr(callback, "abandon"):
                callback.abandon()
        exit_with(message)

    def _executor(self, submitit: Any) -> Any:
        """The submitit executor, configured exactly as hydra-submitit-launcher configures it."""
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            key if key in base_keys else f"{self._EXECUTOR}_{key}": value
            for key, value in self.params.items() if key not in init_keys
        })
        if (self.params.get("nodes") or 1) * (self.params.get("tasks_per_node") or 1) > 1:
            executor.update_parameters(slurm_srun_args=["--kill-on-bad-exit=1"])
        return executor


# sbatch's words for a request the cluster cannot satisfy -> the launcher keys that make that request
_SBATCH_KEYS = (
    (r"partition", ("partition",)),
    (r"account", ("account",)),
    (r"\bqos\b", ("qos",)),
    (r"time limit", ("timeout_min",)),
    (r"\bgres\b|generic resource|\bgpu", ("gpus_per_node", "gpus_per_task", "gres")),
    (r"memory|\bmem\b", ("mem_gb", "mem_per_cpu", "mem_per_gpu")),
    (r"feature|constraint", ("constraint",)),
    (r"node count|nodes? (?:requested|specification)", ("nodes",)),
    (r"processors|\bcpu", ("cpus_per_task", "tasks_per_node")),
    # "Requested node configuration is not available": any resource asked per node
    (r"node configuration", ("gpus_per_node", "gres", "mem_gb", "cpus_per_task", "tasks_per_node", "constraint")),
)


def sbatch_refusal(err: BaseException, params: dict[str, Any]) -> str:
    """One line for a submission sbatch refused: its own words and the hydra.launcher key(s) that likely caused
    it (of those the message points at, the ones this launch set)."""
    cause = err.__cause__ if isinstance(err.__cause__, subprocess.CalledProcessError) else err
    text = str(getattr(cause, "stderr", None) or err)
    said = [re.sub(r"^sbatch: error: ", "", line.strip()) for line in text.splitlines() if line.strip()]
    said = [line for line in said if not line.startswith(("sbatch: ", "Traceback"))] or said
    message = "; ".join(dict.fromkeys(said))
    keys: tuple[str, ...] = ()
    for pattern, candidates in _SBATCH_KEYS:
        if re.search(pattern, message, re.IGNORECASE):
            keys = tuple(k for k in candidates if params.get(k) not in (None, "", {}, [])) or candidates[:1]
            break
    where = (" or ".join(f"hydra.launcher.{k}" for k in keys) if keys else
             "the hydra.launcher settings (partition, gpus_per_node, mem_gb, timeout_min, ...)")
    return f"sbatch refused the job: {message}; check {where}"


def wait_for_jobs(jobs: list[Job], submitted: list[Any]) -> None:
    """Wait until each submitted job has a result file or has been ended by SLURM; fill job_return."""
    waiting = dict(zip((job.idx for job in jobs), zip(jobs, submitted, strict=True), strict=True))
    ended_since: dict[int, float] = {}
    last_asked = 0.0
    states: dict[str, str] = {}
    while waiting:
        now = time.monotonic()
        if now - last_asked >= SCONTROL_EVERY_S:
            states = slurm_states({s.job_id.split("_")[0] for _, s in waiting.values()})
            last_asked = now
        for idx, (job, sub) in list(waiting.items()):
            job.log_path = Path(sub.paths.stdout)
            if _every_task_reported(sub):
                job.job_return = _submitit_return(job, sub)
            else:
                state = states.get(sub.job_id) or states.get(sub.job_id.split("_")[0], "UNKNOWN")
                if state not in TERMINAL_STATES:
                    ended_since.pop(idx, None)
                    continue
                if now - ended_since.setdefault(idx, now) < GRACE_S:
                    continue
                job.ended_how = f"SLURM state {state}"
                error = RuntimeError(f"SLURM job {sub.job_id} ended ({state}) without a result; "
                                     f"see {sub.paths.stderr}\n{(sub.stderr() or '')[-2000:]}")
                job.job_return = job_return(job, JobStatus.FAILED, error)
            del waiting[idx]
            announce_done(job, len(jobs) - len(waiting), len(jobs), "slurm")
        if waiting:
            time.sleep(POLL_S)


def _every_task_reported(sub: Any) -> bool:
    """Whether every task of the submitted job wrote its result file (submitit's `results()` would block
    until then, and forever for a task killed before writing one)."""
    return all(Path(sub.task(i).paths.result_pickle).exists() for i in range(sub.num_tasks))


def _submitit_return(job: Job, sub: Any) -> JobReturn:
    """The JobReturn the SLURM job sent back, or a failed one carrying submitit's error."""
    try:
        ret = sub.results()[0]
    except Exception as e:  # noqa: BLE001 - the job failed outside the task (timeout exhausted, crash)
        return job_return(job, JobStatus.FAILED, e)
    return ret if isinstance(ret, JobReturn) else job_return(job, JobStatus.COMPLETED, ret)


def slurm_states(array_ids: set[str]) -> dict[str, str]:
    """`{"<array>_<task>": state}` from `scontrol show job`; tasks of arrays SLURM forgot read GONE."""
    states: dict[str, str] = {}
    for array_id in array_ids:
        try:
            out = subprocess.run(["scontrol", "show", "job", "-o", array_id],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("scontrol failed (%s); job states unknown for now", e)
            continue
        if out.returncode == 0:
            states.update(parse_scontrol(out.stdout))
        elif "Invalid job id" in out.stderr:
            states[array_id] = "GONE"
    return states


def parse_scontrol(text: str) -> dict[str, str]:
    """Job states from `scontrol show job -o` lines, pending array ranges (`3-5%1`) expanded."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in fields:
            continue
        state = fields["JobState"]
        array_id, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        if not array_id or not task or task == "N/A":
            states[fields.get("JobId", "")] = state
            continue
        for part in task.split("%")[0].split(","):
            low, _, high = part.partition("-")
            for t in range(int(low), int(high or low) + 1):
                states[f"{array_id}_{t}"] = state
    return states

"""Hydra launcher that runs a multirun's jobs side by side, one job per free GPU, each in its own process.

`python -m gptx.train -m hydra/launcher=local_gpus intervention=grad_clip,qkv_bias init_seed=22,42,67`

Hydra's basic launcher runs jobs one after another, and submitit's local executor hands every job
the same GPUs. This one keeps a pool of GPU slots (`gpus_per_job` GPUs each), starts a job per free
slot with `CUDA_VISIBLE_DEVICES` pinned to it, and queues the rest; with no GPU it runs `max_parallel`
CPU jobs. A job is a fresh Python process (a crash or OOM in one cannot take the others down) whose
stdout and stderr go to `console.log` in its run folder. When every job has ended it prints a table
(runs.csv's columns and statuses, what this launch did, the log) and hands Hydra the results, failures
included, so the multirun exits non-zero only after all runs finished.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
import ctypes
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .jobs import Job, announce_done, check_distinct_run_dirs, format_job_table, job_return, plan_job

log = logging.getLogger(__name__)

STATE_DIR = ".local_gpus"  # per-launch job payloads, under the sweep folder; removed at the end
_PR_SET_PDEATHSIG = 1


@dataclass
class LocalGpusConf:
    _target_: str = "hydra_plugins.gptx_launchers.local_gpus.LocalGpusLauncher"
    gpus: list[str] | None = None
    """GPU ids to share out (e.g. [0,1]); null detects them (CUDA_VISIBLE_DEVICES, else nvidia-smi);
    [] runs on CPU."""
    gpus_per_job: int = 1
    """GPUs pinned to each job (CUDA_VISIBLE_DEVICES lists them)."""
    max_parallel: int | None = None
    """Most jobs at once (null = one per GPU slot; on CPU, 1)."""
    threads_per_job: int | None = None
    """OMP/MKL threads per job when not already set in the environment (null = CPUs / jobs at once)."""
    skip_completed: bool = True
    """Do not start a job whose run folder already holds a completed result.json for the same config."""
    stop_grace_s: float = 120.0
    """On Ctrl-C or SIGTERM: seconds the jobs get to checkpoint after SIGTERM before SIGKILL."""
    poll_s: float = 0.2
    """How often to check for finished jobs."""


ConfigStore.instance().store(
    group="hydra/launcher", name="local_gpus_schema", node=LocalGpusConf, provider="gptx_launchers"
)


class _Stop(Exception):
    """SIGTERM reached the launcher: stop the jobs (they checkpoint) and end the multirun."""


def detect_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for entry in (e.strip() for e in visible.split(",")):
            if not entry or entry.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            ids.append(entry)
        return ids
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=60, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def make_slots(gpus: Sequence[str], gpus_per_job: int, max_parallel: int | None) -> list[tuple[str, ...]]:
    """Split the GPUs into slots of `gpus_per_job`; no GPU gives `max_parallel` (default 1) CPU slots."""
    if gpus_per_job < 1:
        raise ValueError(f"hydra.launcher.gpus_per_job={gpus_per_job} must be >= 1")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"hydra.launcher.max_parallel={max_parallel} must be >= 1 (or null)")
    if not gpus:
        return [()] * (max_parallel or 1)
    if gpus_per_job > len(gpus):
        raise ValueError(
            f"hydra.launcher.gpus_per_job={gpus_per_job} but only {len(gpus)} GPU(s) available: {list(gpus)}"
        )
    slots = [tuple(gpus[i : i + gpus_per_job]) for i in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)]
    if len(gpus) % gpus_per_job:
        log.warning("GPUs %s left idle: %d GPUs do not split into slots of %d",
                    list(gpus[len(slots) * gpus_per_job :]), len(gpus), gpus_per_job)
    return slots[:max_parallel] if max_parallel else slots


class LocalGpusLauncher(Launcher):
    """Runs the jobs of a multirun concurrently on this machine's GPUs (or CPUs), one process each."""

    def __init__(self, **params: Any) -> None:
        self.conf = LocalGpusConf(**{k: v for k, v in params.items() if k != "_target_"})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep what launch() needs (Hydra calls this once per multirun)."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run every job, at most one per slot at a time; return their results in order."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = detect_gpus() if self.conf.gpus is None else [str(g) for g in self.conf.gpus]
        slots = make_slots(gpus, self.conf.gpus_per_job, self.conf.max_parallel)
        jobs = [
            plan_job(self.config, self.hydra_context, initial_job_idx + i, list(o), self.conf.skip_completed)
            for i, o in enumerate(job_overrides)
        ]
        check_distinct_run_dirs(jobs)
        where = f"GPU slots {[','.join(s) for s in slots]}" if gpus else f"{len(slots)} CPU slot(s)"
        log.info("Launching %d jobs on %s", len(jobs), where)
        for job in jobs:
            note = "  (skipped: completed, same config)" if job.skipped else ""
            log.info("\t#%d : %s%s", job.idx, " ".join(filter_overrides(job.overrides)), note)
        state_dir = sweep_dir / STATE_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._run_all(jobs, slots, state_dir)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
            _remove_if_empty(state_dir.parent)
            print(format_job_table(jobs, sweep_dir), flush=True)
        return [job.job_return for job in jobs]  # type: ignore[misc]

    def _run_all(self, jobs: list[Job], slots: list[tuple[str, ...]], state_dir: Path) -> None:
        """Start jobs as slots free up until all have ended; on Ctrl-C/SIGTERM stop them all cleanly."""
        pending = deque(job for job in jobs if not job.skipped)
        free = list(slots)
        running: list[Job] = []
        threads = self.conf.threads_per_job or max(1, (os.cpu_count() or 1) // max(1, len(slots)))
        previous_handler = signal.getsignal(signal.SIGTERM)
        in_main_thread = _in_main_thread()
        if in_main_thread:
            signal.signal(signal.SIGTERM, _raise_stop)
        try:
            while pending or running:
                while pending and free:
                    job = pending.popleft()
                    job.slot = free.pop(0)
                    self._start(job, state_dir, threads)
                    running.append(job)
                time.sleep(self.conf.poll_s)
                for job in [j for j in running if j.proc is not None and j.proc.poll() is not None]:
                    running.remove(job)
                    free.append(job.slot)  # type: ignore[arg-type]
                    _collect(job, state_dir)
                    to_run = [j for j in jobs if not j.skipped]
                    announce_done(job, sum(j.job_return is not None for j in to_run), len(to_run), "local_gpus")
        except (KeyboardInterrupt, _Stop):
            log.warning("Stopping %d running job(s): SIGTERM, then SIGKILL after %.0f s",
                        len(running), self.conf.stop_grace_s)
            _stop_jobs(running, self.conf.stop_grace_s)
            for job in running:
                _collect(job, state_dir)
            for job in pending:
                stopped = RuntimeError("not started: the launch was stopped")
                job.job_return = job_return(job, JobStatus.FAILED, stopped)
            raise
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous_handler)

    def _start(self, job: Job, state_dir: Path, threads: int) -> None:
        """Write the job's payload and start its process, pinned to its slot."""
        import cloudpickle  # lazy: plugin discovery imports this module on every Hydra start

        payload = state_dir / f"job-{job.idx}.pkl"
        with open(payload, "wb") as f:
            # sys.path first, so the child can import what the pickled task function refers to.
            pickle.dump(list(sys.path), f)
            cloudpickle.dump(
                (self.hydra_context, self.task_function, job.sweep_config, Singleton.get_state()), f
            )
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.slot or ())
        env["GPTX_LAUNCHER_SLOT"] = ",".join(job.slot or ()) or "cpu"
        env["PYTHONUNBUFFERED"] = "1"
        # Inductor's compile workers default to one per CPU in every job: jobs starting together would
        # each start that many. The job's share of the CPUs instead.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS"):
            env.setdefault(var, str(threads))
        job.env = {k: env[k] for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(job.console_log, "a") as console:
            console.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} job #{job.idx} "
                          f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r}\n")
            console.flush()
            if job.slot and len(job.slot) > 1:
                # Several GPUs for one run: one process per GPU, a DDP run (see gptx.distributed).
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={len(job.slot)}", "-m", __name__, str(payload)]
            else:
                command = [sys.executable, "-c", f"from {__name__} import run_payload; run_payload({str(payload)!r})"]
            job.proc = subprocess.Popen(
                command, env=env, stdout=console, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
            )
        job.started = time.monotonic()


def run_payload(payload: str) -> None:
    """Child process: unpickle one job and run it as Hydra's basic launcher would, then save its return."""
    with open(payload, "rb") as f:
        for entry in reversed(pickle.load(f)):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        hydra_context, task_function, sweep_config, singleton_state = pickle.load(f)
    Singleton.set_state(singleton_state)
    setup_globals()
    try:
        ret = run_job(
            hydra_context=hydra_context, task_function=task_function, config=sweep_config,
            job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as e:  # the task called sys.exit: a failure unless it exited 0
        if e.code in (None, 0):
            ret = JobReturn(status=JobStatus.COMPLETED, _return_value=None)
        else:
            cause = e.__cause__  # gptx.train exits 1 from a failed rank of a multi-GPU run: keep the why
            error = cause if isinstance(cause, Exception) else RuntimeError(f"job exited with {e.code}")
            ret = JobReturn(status=JobStatus.FAILED, _return_value=error)
    except BaseException as e:  # noqa: BLE001 - reported to the launcher, then the child exits 1
        traceback.print_exc()
        ret = JobReturn(status=JobStatus.FAILED, _return_value=e)
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        traceback.print_exception(ret._return_value)  # Hydra caught it; the console log should show it
    if int(os.environ.get("RANK", "0")) == 0:  # a multi-GPU run: rank 0 speaks for the job
        _save_return(ret, Path(payload).with_suffix(".return.pkl"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if ret.status == JobStatus.COMPLETED else 1)  # skip teardown that could hang (CUDA, threads)


def _save_return(ret: JobReturn, path: Path) -> None:
    import cloudpickle

    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001 - an unpicklable return value must not lose the status
        value = ret._return_value
        if isinstance(value, BaseException):
            value = RuntimeError(f"{type(value).__name__}: {value}")
        else:
            value = repr(value)
        data = cloudpickle.dumps(JobReturn(status=ret.status, _return_value=value))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _collect(job: Job, state_dir: Path) -> None:
    """Read the finished job's return (or describe how its process died) into `job.job_return`."""
    assert job.proc is not None
    job.proc.wait()
    job.wall_s = time.monotonic() - job.started
    path = state_dir / f"job-{job.idx}.return.pkl"
    try:
        with open(path, "rb") as f:
            saved: JobReturn = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        rc = job.proc.returncode
        job.ended_how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        error = RuntimeError(f"job #{job.idx} died ({job.ended_how}) before reporting; see {job.console_log}")
        job.job_return = job_return(job, JobStatus.FAILED, error)
        return
    job.job_return = job_return(job, saved.status, saved._return_value)


def _stop_jobs(running: list[Job], grace_s: float) -> None:
    """SIGTERM every job (gptx checkpoints at the next step boundary), SIGKILL whatever outlives grace_s.

    A multi-GPU job is torchrun and its workers, which torchrun starts in sessions of their own, out of
    reach of the job's group: signalled through torchrun they would get its own 30 s before its SIGKILL,
    and a SIGKILL of the job's group would orphan them. So such workers get the SIGTERM directly and the
    whole grace (torchrun ends when they do), and each is SIGKILLed if it outlives it.
    """
    escaped = {job.idx: _outside_group(job.proc.pid) for job in running if job.proc is not None}
    for job in running:
        if escaped.get(job.idx):
            for pid in escaped[job.idx]:
                _signal_pid(pid, signal.SIGTERM)
        else:
            _signal_group(job, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for job in running:
        assert job.proc is not None
        try:
            job.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(job, signal.SIGKILL)
            job.proc.wait()
    for pids in escaped.values():
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_pid(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (Linux; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _outside_group(pid: int) -> list[int]:
    """The processes below `pid` that left its process group (torchrun's workers)."""
    outside = []
    for child in descendants(pid):
        try:
            if os.getpgid(child) != pid:
                outside.append(child)
        except ProcessLookupError:
            continue
    return outside


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie waiting for its reaper has ended too
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(job: Job, sig: signal.Signals) -> None:
    assert job.proc is not None
    try:
        os.killpg(job.proc.pid, sig)  # the job's own session: reaches its data-loader workers too
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent(parent_pid: int):
    """preexec_fn: have Linux send the job SIGTERM if the launcher dies (no orphans writing a run folder)."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec if sys.platform.startswith("linux") else None


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(f"signal {signum}")


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


if __name__ == "__main__":  # one rank of a multi-GPU job, started by torch.distributed.run
    run_payload(sys.argv[1])

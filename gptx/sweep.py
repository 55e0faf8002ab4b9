"""The sweep callback: a sweep folder's lock while a multirun runs, and its runs table and report after.

`python -m gptx.train -m sweep=NAME intervention=grad_clip,qkv_bias init_seed=22,42,67` puts the
sweep in `multirun_outputs/NAME/` (folder names: gptx.naming); running the same command again
finishes it. `SweepCallback` (a Hydra callback) then writes `multirun_outputs/NAME/runs.csv` from what
the run folders hold.
"""

import atexit
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from filelock import UnixFileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gptx.analysis.runs import Run, format_table, load_runs, run_row, write_runs_csv
from gptx.config import ConfigError, LoggerConfig
from gptx.errors import exit_with
from gptx.files import LOCK_FILE, OVERRIDES_FILE, RESULT_FILE, RUNS_CSV, STUDY_FILE, write_atomic
from gptx.folders import FolderRefused, take_lock
from gptx.result import FINAL_STATUSES, OK_STATUSES, Status, find_run_dirs
from gptx.trackers import check_available, log_report, prepare_sweep_store

_RESOLVER_ERROR_PREFIX = re.compile(r"^\w+ raised while resolving interpolation: ")
_held_locks: dict[str, UnixFileLock] = {}  # sweep dir -> its lock, held until the multirun ends
_launches: list["SweepCallback"] = []  # this process's multiruns, for abandon_launches_that_ran_nothing


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _fingerprint(run_dir: Path) -> tuple[int | None, int | None]:
    """What changes when a launch touches a run: Hydra rewrites `.hydra/`, train rewrites result.json."""
    return _mtime_ns(run_dir / OVERRIDES_FILE), _mtime_ns(run_dir / RESULT_FILE)


def _fingerprints(sweep_dir: str | os.PathLike) -> dict[str, tuple[int | None, int | None]]:
    """Each run folder's fingerprint, keyed by its resolved path (as load_runs names the folders)."""
    return {str(d.resolve()): _fingerprint(d) for d in find_run_dirs(sweep_dir)}


def lock_sweep(sweep_dir: str | os.PathLike) -> None:
    """Hold an exclusive lock on a sweep folder, or exit with one line if it cannot be taken (fails closed:
    another launch holding it, a lock file gptx may not open, a read-only disk, no flock)."""
    sweep_dir = Path(sweep_dir)
    key = str(sweep_dir.resolve())
    if key in _held_locks:
        return
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _held_locks[key] = take_lock(sweep_dir / LOCK_FILE, f"sweep folder {sweep_dir}", "wait or pick sweep=OTHER")
    except FolderRefused as err:
        exit_with(str(err).replace("another gptx process", "another launch"))
    except OSError as err:
        exit_with(f"cannot create the sweep folder {sweep_dir} ({err.strerror or err}); "
                  "pick sweep=OTHER or output_root=…")
    try:
        _probe_space(sweep_dir)
    except OSError as err:
        unlock_sweep(sweep_dir)
        exit_with(f"cannot write in the sweep folder {sweep_dir} ({err.strerror or err}): nothing was run; "
                  "free space (or pick output_root=… elsewhere) and relaunch the same command")


SPACE_PROBE = 1 << 16  # bytes written and removed at launch: Hydra's multirun.yaml and the first files


def _probe_space(sweep_dir: Path) -> None:
    """Write and remove a small file, so a disk that is already full (or read-only) stops the launch in one
    line here rather than in a traceback from Hydra's own write of multirun.yaml."""
    probe = sweep_dir / f".space-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * SPACE_PROBE)
            f.flush()
            os.fsync(f.fileno())
    finally:
        probe.unlink(missing_ok=True)


def unlock_sweep(sweep_dir: str | os.PathLike) -> None:
    """Release the lock taken by `lock_sweep` (the OS also drops it when the process ends)."""
    lock = _held_locks.pop(str(Path(sweep_dir).resolve()), None)
    if lock is not None:
        lock.release()


class SweepCallback(Callback):
    """Hydra callback: lock the sweep folder, then write runs.csv, the report and a summary at the end."""

    def __init__(self) -> None:
        # Plain data only: Hydra pickles callbacks into every submitit / local_gpus job.
        self.sweep_dir: str | None = None
        self.before: dict[str, tuple[int | None, int | None]] = {}
        self.finished = True
        self.created = False  # whether this launch created the sweep folder
        self.study: dict[str, Any] | None = None  # study.json to write at the end, when the folder has none
        self.logger: dict[str, Any] | None = None  # the sweep's tracker settings, for the report at the end

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Lock the sweep folder and note each existing run's state, to tell later what this launch did."""
        try:
            self.sweep_dir = str(config.hydra.sweep.dir)
        except Exception as e:  # noqa: BLE001 - a bad sweep= name: one line here beats Hydra's traceback later
            first_line = (str(e) or type(e).__name__).splitlines()[0]
            exit_with(_RESOLVER_ERROR_PREFIX.sub("", first_line))
        self.created = not Path(self.sweep_dir).exists()
        self.study = check_one_study(config, Path(self.sweep_dir))
        advice = idle_gpus_warning(config)
        if advice:
            print(advice, file=sys.stderr)
        self.logger = _checked_logger(config)
        lock_sweep(self.sweep_dir)
        if self.logger is not None:
            _guarded(lambda: prepare_sweep_store(LoggerConfig(**self.logger), Path(self.sweep_dir)))
        self.before = _fingerprints(self.sweep_dir)
        self.finished = False
        _launches.append(self)
        # Hydra skips on_multirun_end when a job raised or a launcher died; the table is still due.
        atexit.register(self._finish_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write runs.csv and the report, print the summary, and exit non-zero if a run failed."""
        failed = self.finish()
        if failed:
            sys.exit(f"gptx: {len(failed)} run(s) of this launch did not complete: {', '.join(failed)}")

    def abandon(self) -> None:
        """The launch was refused before any job ran (a sweeper's bad plan): write nothing, release the lock,
        and remove the sweep folder if this launch created it and it holds nothing but the lock."""
        if self.finished or self.sweep_dir is None:
            return
        self.finished = True
        sweep_dir = Path(self.sweep_dir)
        unlock_sweep(sweep_dir)
        if self.created and [p.name for p in sweep_dir.iterdir()] == [LOCK_FILE]:
            (sweep_dir / LOCK_FILE).unlink()
            sweep_dir.rmdir()

    def _finish_at_exit(self) -> None:
        if not self.finished:
            self.finish()

    def finish(self) -> list[str]:
        """Scan the sweep once, write runs.csv and the report, print the table; return runs that failed now."""
        if self.finished or self.sweep_dir is None:
            return []
        self.finished = True
        sweep_dir = Path(self.sweep_dir)
        if self.study is not None and not (sweep_dir / STUDY_FILE).exists():
            # at the end, so a launch refused before any job ran (a sweeper's bad plan) writes nothing
            write_atomic(sweep_dir / STUDY_FILE, (json.dumps(self.study, indent=2) + "\n").encode())
        notes: list[str] = []
        runs = load_runs([sweep_dir], require=False, notes=notes)  # arms named against study.json
        rows = [run_row(r, sweep_dir) for r in runs]
        touched = [row for r, row in zip(runs, rows, strict=True)
                   if self.before.get(str(r.folder)) != _fingerprint(Path(r.folder))]
        failed = [row["run"] for row in touched if row["status"] not in OK_STATUSES]
        ran, untouched = len(touched), len(rows) - len(touched)
        summary = _write_report(sweep_dir, runs, notes)
        if self.logger is not None:
            log_report(LoggerConfig(**self.logger), sweep_dir)
        counts = {s: sum(r["status"] == s for r in rows) for s in FINAL_STATUSES + (Status.INCOMPLETE,)}
        print(format_table(rows, ("run", "status", "test_loss", "wall_seconds", "error")))
        print(
            f"sweep {sweep_dir}: {len(rows)} runs ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
            f"{ran} ran in this launch, {untouched} left as they were (already done or not in this launch); "
            f"table: {sweep_dir / RUNS_CSV}"
        )
        if summary is not None:  # the answer, where the user is looking: the verdicts, then where the report is
            from gptx.analysis.report import table

            print("\n" + table(summary) + f"\n\nnoise report: {sweep_dir / 'report.md'}")
        sys.stdout.flush()
        unlock_sweep(sweep_dir)
        return failed


def abandon_launches_that_ran_nothing() -> None:
    """A multirun that stopped before any job touched a run folder (Hydra could not compose the first job):
    write nothing at exit, as a refused launch, so its one error line is all it says."""
    for launch in _launches:
        if launch.finished or launch.sweep_dir is None:
            continue
        if _fingerprints(launch.sweep_dir) == launch.before:
            launch.abandon()


def swept_values(config: DictConfig) -> dict[str, list]:
    """The keys this multirun varies (command line and hydra.sweeper.params), with their values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(config, "hydra.overrides.task") or [])
    swept: dict[str, list] = {}
    for line in lines:
        try:
            override = OverridesParser.create().parse_override(str(line))
            if override.is_sweep_override():
                swept[override.key_or_group.lstrip("+~")] = list(override.sweep_iterator())
        except Exception:  # noqa: BLE001 - a sweep form gptx cannot enumerate (glob, interval) checks nothing
            continue
    return swept


def check_one_study(config: DictConfig, sweep_dir: Path) -> dict[str, Any] | None:
    """A sweep folder holds one study: refuse (one line, nothing written) a launch whose base config differs
    from the folder's in a key it does not sweep; warn when no run of the launch can be the baseline.

    Returns the study.json to write (None when the folder has one): the launch's base arm settings.
    """
    from gptx.analysis.arms import existing_base, missing_baseline, read_study_base, study_conflicts
    from gptx.config import arm_settings

    plain = {key: OmegaConf.to_container(value, resolve=True, enum_to_str=True) if OmegaConf.is_config(value)
             else value for key in config if key != "hydra" for value in [config[key]]}
    interventions = [n for n in (plain.get("intervention") or {}) if n != "baseline"]
    # the base config less what its own interventions set: a launch of `intervention=grad_clip` alone and
    # one sweeping `intervention=baseline,grad_clip` share the same base
    set_by = {k for name in interventions for k in _intervention_keys(name)}
    base = {k: v for k, v in arm_settings(plain).items() if k not in set_by}
    swept = swept_values(config)
    recorded = read_study_base([sweep_dir])
    runs = load_runs([sweep_dir], require=False) if sweep_dir.is_dir() else []
    old = existing_base(runs, recorded)
    if old is not None:
        conflicts = study_conflicts(old, base, swept)
        if conflicts:
            exit_with(f"{sweep_dir} holds another study ({'; '.join(conflicts)}); its runs and "
                      "this launch's would be mixed in one report: pick another sweep=NAME, or sweep the key "
                      "with both values to compare them as arms")
    missing = missing_baseline(base, interventions, swept)
    # a baseline still running in another launch counts: it will be there for the report
    has_baseline = any(r.arm == "baseline" and (r.included or r.status == Status.RUNNING) for r in runs)
    basic = str(OmegaConf.select(config, "hydra.sweeper._target_") or "").endswith("BasicSweeper")
    if missing and not has_baseline and basic:  # other sweepers plan their own arms (adaptive checks its baseline)
        print(f"gptx: warning: no run of this sweep is the baseline (the base config at {', '.join(missing)}), "
              f"so the report will have nothing to compare the arms with: add it to the sweep "
              f"(e.g. {_with_value(missing[0], swept)})", file=sys.stderr)
    return None if recorded is not None else {"base_settings": base, "base_interventions": interventions}


def idle_gpus_warning(config: DictConfig, gpus: int | None = None) -> str | None:
    """Hydra's basic launcher runs a sweep's jobs one after another in this process, so on a machine with
    several GPUs every run trains on the first while the others idle: say so, with the launcher that uses
    them. `gpus`: the visible GPU count (default: torch's, which needs no CUDA context)."""
    if not str(OmegaConf.select(config, "hydra.launcher._target_") or "").endswith("BasicLauncher"):
        return None
    if gpus is None:
        import torch  # the training process has it loaded already

        gpus = torch.cuda.device_count()
    if gpus < 2:
        return None
    return (f"gptx: warning: {gpus} GPUs are visible, but Hydra's basic launcher runs this sweep's jobs one after "
            "another on the first of them: add hydra/launcher=local_gpus to train one job per GPU at once")


def _checked_logger(config: DictConfig) -> dict[str, Any] | None:
    """The sweep's tracker settings (None without one); a tracker whose library is missing stops the launch."""
    node = OmegaConf.select(config, "logger")
    logger = OmegaConf.to_container(node, resolve=True, enum_to_str=True) if node is not None else {}
    if str(logger.get("name", "none")) == "none":
        return None
    try:
        check_available(str(logger["name"]))
    except ConfigError as err:
        exit_with(err)
    return logger


def _guarded(call) -> None:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - a tracker store that cannot be prepared: each run warns on its own
        print(f"gptx: warning: the sweep's tracker store was not prepared ({type(e).__name__}: {e})", file=sys.stderr)


def _intervention_keys(name: str) -> set[str]:
    """The keys an intervention sets, from the config search path of the running app (else gptx's own)."""
    from gptx.config import intervention_settings
    from gptx.interventions import SearchPath

    for load in (lambda: SearchPath().load(name).settings, lambda: intervention_settings(name)):
        try:
            return set(load())
        except Exception:  # noqa: BLE001 - no Hydra app running, or not one of gptx's files
            continue
    return set()


def _with_value(item: str, swept: dict[str, list]) -> str:
    key, _, value = item.partition("=")
    return f"{key}={','.join([value, *map(str, swept.get(key, []))])}"


def _write_report(sweep_dir: Path, runs: list[Run], notes: list[str]) -> dict[str, Any] | None:
    """The noise report and runs.csv into the sweep folder (the report writes runs.csv); a report that fails
    must never cost the runs table, so runs.csv is then written on its own."""
    try:
        from gptx.analysis.outputs import write_report  # scipy and the report only once the sweep ends

        return write_report(paths=[sweep_dir], out_dir=sweep_dir, runs=runs, notes=notes)
    except Exception as e:  # noqa: BLE001 - any report error is reported and the sweep goes on
        write_runs_csv(runs, sweep_dir / RUNS_CSV)
        print(f"gptx: report not written ({type(e).__name__}: {e}); runs.csv is complete", file=sys.stderr)


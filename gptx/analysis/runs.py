"""Runs as the analysis sees them: finding and reading result.json, duplicates, curves, runs.csv.

A run is a `Run` record built from one result dict, so the same analysis reads folders written by
`gptx.train` and sweeps generated in memory by `gptx.analysis.simulate`.
"""

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptx.analysis.arms import name_arms, read_study_base
from gptx.files import (
    FINAL_STATUSES,
    METRICS_FILE,
    REPRODUCTIONS_DIR,
    RESULT_FILE,
    TEST_LOSSES_FILE,
    Status,
    read_json_object,
    write_atomic,
)

# runs.csv, one row a run folder; this module is its only writer (the sweep callback and gptx.analyze
# both call write_runs_csv), so the file has one schema whoever wrote it last.
CSV_FIELDS = ("run", "arm", "intervention", "status", "included", "reason", "init_seed", "train_seed",
              "data_seed", "replica", "test_loss", "val_loss", "train_loss", "steps", "tokens", "wall_seconds",
              "tokens_per_second", "device", "precision", "model", "n_params", "diverged_at_step", "error",
              "hostname", "config_sha256", "init_weights_sha256", "final_weights_sha256")
# Statuses a run can end with; runs.csv calls anything else (still running, killed, unreadable) incomplete.


class UserError(Exception):
    """A problem with the command line or the inputs that the user can fix; printed as one line."""


@dataclass
class Run:
    """One run's result, with the metric value when it can enter the statistics."""

    folder: Path
    result: dict
    arm: str
    status: str  # completed, diverged, failed, running, or unknown / unreadable
    value: float | None = None
    reason: str | None = None  # why the run is left out of the statistics
    seeds: tuple = field(default=(None, None, None))  # (init_seed, train_seed, data_seed)
    label: str = ""  # the interventions' name (result.json's `arm`); `arm` names the configuration

    def __post_init__(self) -> None:
        self.label = self.label or self.arm

    @property
    def included(self) -> bool:
        """Whether the run enters the statistics."""
        return self.reason is None


def arm_name(intervention) -> str:
    """The arm of a list of intervention names: sorted, joined by '+', 'baseline' dropped beside others."""
    names = {str(n) for n in ([intervention] if isinstance(intervention, str) else intervention or [])}
    return "+".join(sorted(names - {"baseline"} if len(names) > 1 else names)) or "baseline"


def find_results(paths: list[Path]) -> list[Path]:
    """Every result.json at or below the given paths; a path without one is a user error."""
    files: list[Path] = []
    for p in map(Path, paths):
        found = [p] if p.is_file() and p.name == RESULT_FILE else sorted(
            f for f in p.rglob(RESULT_FILE) if not _in_reproductions(f, p))
        if not found:
            raise UserError(f"{p}: no result.json found" + ("" if p.exists() else " (path does not exist)"))
        files += found
    return sorted({f.resolve() for f in files})


def find_unfinished(paths: list[Path]) -> list[Path]:
    """Run folders (holding `.hydra/`) without a result.json: killed before they could write one."""
    return sorted({d.parent.resolve() for p in map(Path, paths) if p.is_dir() for d in p.rglob(".hydra")
                   if d.is_dir() and not (d.parent / RESULT_FILE).exists() and not _in_reproductions(d, p)})


def _in_reproductions(path: Path, root: Path) -> bool:
    """Whether `path` lies in a run's reproductions/ folder below `root`: re-runs, not extra seeds."""
    return REPRODUCTIONS_DIR in path.relative_to(root).parts[:-1]


def run_from_result(result: dict, folder: Path, metric: str) -> Run:
    """A Run from a result dict; failed, diverged, unfinished runs and unusable metrics get a reason."""
    arm = str(result["arm"]) if result.get("arm") else arm_name(result.get("intervention") or ["baseline"])
    status = str(result.get("status") or "unknown")
    seeds = (result.get("init_seed"), result.get("train_seed"), result.get("data_seed"))
    run = Run(folder, result, arm, status, seeds=seeds)
    value = result.get(metric)
    if status != Status.COMPLETED:
        step = result.get("diverged_at_step")
        run.reason = {Status.RUNNING: "incomplete: status still 'running' (killed, or not finished)",
                      Status.DIVERGED: Status.DIVERGED.value + (f" at step {step}" if step is not None else ""),
                      "unknown": "result.json has no status"}.get(status, status)
        run.reason += f": {str(result['error']).splitlines()[0]}" if result.get("error") else ""
    elif isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
        run.reason = f"no numeric {metric}"
    elif value is None or not math.isfinite(value):
        # non-finite losses are written as null: a completed run without a finite metric diverged
        run.status, run.reason = Status.DIVERGED, f"diverged: {metric} is {value if value is not None else 'null'}"
    else:
        run.value = float(value)
    return run


def load_run(path: Path, metric: str) -> Run:
    """Read one result.json; unreadable files and unusable metrics become an excluded run with a reason."""
    try:
        result = read_json_object(path)
    except (OSError, ValueError) as e:  # a half-copied file must not stop the report
        return Run(path.parent, {}, "?", "unreadable", reason=f"unreadable result.json: {e}")
    return run_from_result(result, path.parent, metric)


def drop_duplicate_copies(runs: list[Run]) -> list[Run]:
    """Copies of one run (same config, final weights, host and wall time) count once; later copies excluded.

    A sweep folder copied twice would otherwise read as bitwise-identical repeats: a measured floor of zero.
    """
    seen: dict = {}
    for r in runs:
        keys = ("config_sha256", "final_weights_sha256", "hostname", "wall_seconds")
        key = tuple(r.result.get(k) for k in keys)
        if not r.included or any(k is None for k in key):
            continue
        key += (r.arm, r.seeds, r.result.get("replica"))
        if key in seen:
            r.reason = f"duplicate copy of {seen[key].folder}"
        else:
            seen[key] = r
    return runs


def seed_key(v):
    """Sort key for seeds that may be None, ints or strings."""
    return (v is None, isinstance(v, str), 0 if v is None else v)


def seeds_key(s: tuple) -> tuple:
    """Sort key for an (init_seed, train_seed, data_seed) tuple."""
    return tuple(map(seed_key, s))


def group_configs(runs: list[Run]) -> dict:
    """Included runs grouped as repeats of one config: {(arm, seeds): [runs]}; unseeded runs stay alone."""
    groups: dict = defaultdict(list)
    for r in runs:
        if r.included:
            groups[(r.arm, r.seeds if r.seeds[0] is not None else ("unseeded", str(r.folder)))].append(r)
    return groups


def read_curve(folder: Path) -> list[dict]:
    """The logged steps of a run from metrics.jsonl, skipping a torn last line; [] when absent."""
    try:
        lines = (folder / METRICS_FILE).read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):  # a killed run can leave half a line
            continue
    return [r for r in rows if isinstance(r, dict)]


def read_test_losses(folder: Path) -> np.ndarray | None:
    """A run's per-sequence test losses (test_losses.npy, or the .npy a table row names), or None when not
    recorded or unreadable."""
    folder = Path(folder)
    try:
        x = np.load(folder if folder.suffix == ".npy" else folder / TEST_LOSSES_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return x.astype(float) if x.ndim == 1 and len(x) and np.isfinite(x).all() else None


def _incomplete_why(r: Run) -> str:
    """Why a run without an error of its own is incomplete: no result.json, unreadable, or still running."""
    if r.status in FINAL_STATUSES:
        return ""
    if not r.result:
        return "no result.json" if r.status == Status.RUNNING else r.reason or r.status
    return f"result.json status {r.status!r}"


def load_runs(paths: list[Path], metric: str = "test_loss", require: bool = True,
              notes: list[str] | None = None) -> list[Run]:
    """Every run below `paths`: each result.json, and each run folder killed before it wrote one.

    Each run's arm is its configuration (gptx.analysis.arms), named against the sweep's recorded base
    config (what naming found worth saying goes into `notes`). With require=False a path without any
    result.json is not an error (a sweep whose jobs all died).
    """
    paths = [Path(p) for p in paths]
    try:
        files = find_results(paths)
    except UserError:
        if require:
            raise
        files = []
    runs = [load_run(f, metric) for f in files] + [
        Run(d, {}, "?", Status.RUNNING, reason="incomplete: no result.json (killed before writing one)")
        for d in find_unfinished(paths)]
    found = name_arms(runs, read_study_base(paths))
    if notes is not None:
        notes += found
    return runs


def write_runs_csv(runs: list[Run], path: Path) -> None:
    """runs.csv: one row a run, included or not, with its seeds, losses, cost and hashes.

    `run` is the run folder relative to the file's folder (absolute when outside it); `status` is the
    run's final status, or `incomplete` for a run still running, killed, or with an unreadable result.
    """
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    w.writeheader()
    root = Path(path).parent.resolve()
    for r in sorted(runs, key=lambda r: str(r.folder)):
        folder = Path(r.folder).resolve()
        intervention = r.result.get("intervention")
        error = str(r.result.get("error") or "").strip() or _incomplete_why(r)
        w.writerow({**{k: r.result.get(k) for k in CSV_FIELDS},
                    "run": str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder),
                    "arm": r.arm, "intervention": "+".join(map(str, intervention))
                    if isinstance(intervention, list) else intervention,
                    "status": r.status if r.status in FINAL_STATUSES else Status.INCOMPLETE,
                    "included": r.included, "reason": r.reason or "", "error": error.splitlines()[-1] if error else ""})
    write_atomic(path, buffer.getvalue().encode())

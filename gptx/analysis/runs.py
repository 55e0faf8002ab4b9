"""Runs as the analysis sees them, and the runs table: duplicates, curves, runs.csv and the table printed
at the end of every sweep and launch (one row builder, `run_row`, for all of them).

A run is a `Run` record built from one result (gptx.result.RunResult, or a dict shaped like one), so the
same analysis reads folders written by `gptx.train`, tables of runs, and sweeps generated in memory by
`gptx.analysis.simulate`.
"""

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptx.analysis.arms import name_arms, read_study_base
from gptx.errors import UsageError
from gptx.files import METRICS_FILE, RESULT_FILE, TEST_LOSSES_FILE, write_atomic
from gptx.result import FINAL_STATUSES, RunResult, Status, find_run_dirs, load_result

# runs.csv, one row a run folder; this module is its only writer (gptx.analysis.outputs.write_report, for
# gptx.analyze and the sweep callback alike), so the file has one schema whoever wrote it last.
CSV_FIELDS = ("run", "arm", "intervention", "status", "included", "reason", "init_seed", "train_seed",
              "data_seed", "replica", "test_loss", "val_loss", "train_loss", "steps", "tokens", "wall_seconds",
              "tokens_per_second", "device", "precision", "model", "n_params", "diverged_at_step", "error",
              "hostname", "config_sha256", "init_weights_sha256", "final_weights_sha256")


class UserError(UsageError):
    """A problem with the analysis's command line or inputs that the user can fix: one line, exit status 2."""


@dataclass
class Run:
    """One run's result, with the metric value when it can enter the statistics."""

    folder: Path
    result: RunResult  # empty (false) when there is no result.json, or one that could not be read
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


def run_from_result(result: RunResult | dict, folder: Path, metric: str) -> Run:
    """A Run from a result (a record, or a dict shaped like result.json: a table's row, a simulated run);
    failed, diverged, unfinished runs and unusable metrics get a reason."""
    result = result if isinstance(result, RunResult) else RunResult.from_json(result)
    arm = str(result.arm) if result.arm else "baseline"
    status = str(result.status or "unknown")
    seeds = (result.init_seed, result.train_seed, result.data_seed)
    run = Run(folder, result, arm, status, seeds=seeds)
    value = result.get(metric)
    if status != Status.COMPLETED:
        step = result.get("diverged_at_step")
        run.reason = {Status.RUNNING: "incomplete: status still 'running' (killed, or not finished)",
                      Status.DIVERGED: Status.DIVERGED.value + (f" at step {step}" if step is not None else ""),
                      "unknown": "result.json has no status"}.get(status, status)
        run.reason += f": {str(result.error).splitlines()[0]}" if result.error else ""
    elif isinstance(value, bool) or (value is not None and not isinstance(value, (int, float))):
        run.reason = f"no numeric {metric}"
    elif value is None or not math.isfinite(value):
        # non-finite losses are written as null: a completed run without a finite metric diverged
        run.status, run.reason = Status.DIVERGED, f"diverged: {metric} is {value if value is not None else 'null'}"
    else:
        run.value = float(value)
    return run


def load_run(run_dir: Path, metric: str = "test_loss") -> Run:
    """The run in one folder; no result.json, an unreadable one or an unusable metric make an excluded run
    with a reason (a half-copied file must not stop the report)."""
    try:
        result = load_result(run_dir)
    except FileNotFoundError:
        return Run(run_dir, RunResult(), "?", Status.RUNNING, reason="incomplete: no result.json (killed before "
                   "writing one)")
    except (OSError, ValueError) as e:
        return Run(run_dir, RunResult(), "?", "unreadable", reason=f"unreadable result.json: {e}")
    return run_from_result(result, run_dir, metric)


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
    """Every run below `paths` (gptx.result.find_run_dirs, or a result.json named itself), in folder order:
    each finished one, and each killed before it wrote a result.json.

    Each run's arm is its configuration (gptx.analysis.arms), named against the sweep's recorded base
    config (what naming found worth saying goes into `notes`). With require=False a path without any
    result.json is not an error (a sweep whose jobs all died).
    """
    paths = [Path(p) for p in paths]
    folders: set[Path] = set()
    for p in paths:
        found = [p.parent] if p.is_file() and p.name == RESULT_FILE else find_run_dirs(p)
        if require and not any((f / RESULT_FILE).is_file() for f in found):
            raise UserError(f"{p}: no result.json found" + ("" if p.exists() else " (path does not exist)"))
        folders.update(f.resolve() for f in found)
    runs = [load_run(folder, metric) for folder in sorted(folders)]
    found_notes = name_arms(runs, read_study_base(paths))
    if notes is not None:
        notes += found_notes
    return runs


def run_row(r: Run, root: Path) -> dict[str, Any]:
    """A run's row of runs.csv (CSV_FIELDS), as every runs table shows it: `run` is the folder relative to
    `root` (absolute when outside it); `status` the run's final status, or `incomplete` for a run still
    running, killed, or with an unreadable result; `error` the last line of the error, or why incomplete."""
    folder, root = Path(r.folder).resolve(), Path(root).resolve()
    intervention = r.result.get("intervention")
    error = str(r.result.get("error") or "").strip() or _incomplete_why(r)
    return {**{k: r.result.get(k) for k in CSV_FIELDS},
            "run": str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder),
            "arm": r.arm, "intervention": "+".join(map(str, intervention))
            if isinstance(intervention, list) else intervention,
            "status": r.status if r.status in FINAL_STATUSES else Status.INCOMPLETE,
            "included": r.included, "reason": r.reason or "", "error": error.splitlines()[-1] if error else ""}


def scan_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The rows of every run folder in a sweep, read from disk (not from what a launcher returned)."""
    return [run_row(r, sweep_dir) for r in load_runs([sweep_dir], require=False)]


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """The runs table printed at the end of a sweep and of a launch: `columns` of `rows`, fixed width."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_runs_csv(runs: list[Run], path: Path) -> None:
    """runs.csv: one row a run (run_row), included or not, with its seeds, losses, cost and hashes."""
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in sorted(runs, key=lambda r: str(r.folder)):
        w.writerow(run_row(r, Path(path).parent))
    write_atomic(path, buffer.getvalue().encode())

"""The noise report's files: summary.json, report.md, runs.csv, noise.png and curves.png for runs found below
folders or given as one table. `python -m gptx.analyze` and the sweep callback both call `write_report`.
"""

import json
from pathlib import Path

from gptx.analysis import table as tables
from gptx.analysis.arms import next_commands
from gptx.analysis.report import markdown
from gptx.analysis.runs import Run, UserError, load_runs, read_curve, write_runs_csv
from gptx.analysis.sequential import Plan, replay, with_sequential_verdicts
from gptx.analysis.summary import MIN_EFFECT, analyze, jsonable
from gptx.files import ADAPTIVE_FILE, RUNS_CSV


def write_report(paths: list[Path], out_dir: Path, baseline: str = "baseline", metric: str = "test_loss",
                 seed: int = 0, min_effect: float = MIN_EFFECT, plots: bool = True,
                 strict_baseline: bool = False, equal_noise: bool = False, runs: list[Run] | None = None,
                 notes: list[str] | None = None) -> dict:
    """Analyse every result.json below `paths`, or the one table of runs given, and write report.md,
    summary.json, runs.csv (folders only) and (unless plots=False) noise.png and curves.png (folders only)
    into `out_dir`; return the summary. With `strict_baseline` (a baseline named on the command line) a
    baseline that is no arm is refused before anything is written; `equal_noise` pools every arm's noise
    (the stated assumption of --assume-equal-noise). `runs` (and their naming `notes`): the runs below
    `paths` as load_runs read them already (the sweep callback's one scan)."""
    paths = [Path(p) for p in paths]
    is_table = any(tables.is_table(p) for p in paths)
    if is_table:
        if len(paths) > 1:
            raise UserError("a table of runs is analysed on its own: give one TABLE, or add its rows to one table")
        runs, info = tables.read_table(paths[0], metric)
        _check_baseline(runs, baseline, strict_baseline)
        summary = tables.summarize(runs, info, baseline, metric, seed, min_effect, equal_noise=equal_noise)
    else:
        if runs is None:
            notes = []
            runs = load_runs(paths, metric, notes=notes)
        notes = list(notes or [])
        if not any(isinstance(r.result.get(metric), (int, float)) for r in runs):
            raise UserError(f"no run has a numeric '{metric}' (--metric); try test_loss, val_loss or train_loss")
        _check_baseline(runs, baseline, strict_baseline)
        summary = analyze(runs, baseline, metric, seed, min_effect, equal_noise=equal_noise)
        summary["warnings"] = notes + list(summary.get("warnings") or [])
        commands = next_commands(summary, runs, paths[0]) if len(paths) == 1 and Path(paths[0]).is_dir() else {}
        if commands:  # what to run next for each undecided arm, shown by the report
            summary["next"] = commands
        adaptive = _adaptive_plan(paths)
        if adaptive is not None:
            summary = with_sequential_verdicts(summary, replay(runs, adaptive))
        summary = jsonable(summary)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    except OSError as e:
        raise UserError(f"cannot write the report into {out_dir} (--out): {e.strerror or e}") from e
    if not is_table:
        write_runs_csv(runs, out_dir / RUNS_CSV)
    (out_dir / "report.md").write_text(markdown(summary))
    if plots:
        from gptx.analysis import plots as figures  # matplotlib is imported only when figures are drawn

        figures.plot_noise(summary, [r for r in runs if r.included], out_dir / "noise.png")
    if plots and not is_table:
        figures.plot_curves([(r.arm, r.included, read_curve(r.folder)) for r in runs], summary["order"],
                            summary["baseline"], out_dir / "curves.png")
    return summary


def _check_baseline(runs: list, baseline: str, strict: bool) -> None:
    """A baseline named on the command line must be one of the arms: one line listing them, nothing written."""
    arms = sorted({r.arm for r in runs if r.result})
    if strict and baseline not in arms:
        raise UserError(f"--baseline {baseline!r} is not an arm of these runs; the arms: {', '.join(arms)}")


def _adaptive_plan(paths: list[Path]):
    """The plan of the adaptive sweep analysed, when the one folder given is one (its adaptive.json)."""
    if len(paths) != 1 or not (Path(paths[0]) / ADAPTIVE_FILE).is_file():
        return None
    path = Path(paths[0]) / ADAPTIVE_FILE
    try:
        return Plan.from_json(json.loads(path.read_text())["plan"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the adaptive sweep's plan {path}: {e}") from e

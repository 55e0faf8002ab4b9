"""The noise report: is each intervention real, or is it in the noise?

    python -m gptx.analyze SWEEP_DIR [PATH ...] [--baseline baseline] [--metric test_loss] [--out DIR]
                           [--min-effect 0.01] [--assume-equal-noise] [--no-plots]

    python -m gptx.analyze TABLE [--out DIR] ...   # runs from anywhere: .csv, .jsonl, .json, .parquet

Finds every `result.json` below the paths (nothing else is needed, so results copied from a cluster
work), lists failed, diverged and incomplete runs while leaving them out of the statistics, and writes
report.md, runs.csv, summary.json, noise.png and curves.png. A table of runs (one row a run; columns in
docs/analysis.md) is analysed on its own and reported into `<stem>-report/` beside it (report.md,
summary.json, noise.png: the table is the runs, and has no curves). The analysis itself lives in the
torch-free package `gptx.analysis`; docs/analysis.md explains every statistic.
"""

import json
import sys
from pathlib import Path

from gptx.analysis import table as tables
from gptx.analysis.arms import next_commands
from gptx.analysis.report import markdown, table
from gptx.analysis.runs import UserError, load_runs, read_curve, write_runs_csv
from gptx.analysis.sequential import Plan, replay, with_sequential_verdicts
from gptx.analysis.summary import MIN_EFFECT, analyze, jsonable
from gptx.errors import ArgumentParser, entry_point
from gptx.files import ADAPTIVE_FILE, RUNS_CSV


def write_report(paths: list[Path], out_dir: Path, baseline: str = "baseline", metric: str = "test_loss",
                 seed: int = 0, min_effect: float = MIN_EFFECT, plots: bool = True,
                 strict_baseline: bool = False, equal_noise: bool = False) -> dict:
    """Analyse every result.json below `paths`, or the one table of runs given, and write report.md,
    summary.json, runs.csv (folders only) and (unless plots=False) noise.png and curves.png (folders only)
    into `out_dir`; return the summary. With `strict_baseline` (a baseline named on the command line) a
    baseline that is no arm is refused before anything is written; `equal_noise` pools every arm's noise
    (the stated assumption of --assume-equal-noise)."""
    paths = [Path(p) for p in paths]
    is_table = any(tables.is_table(p) for p in paths)
    if is_table:
        if len(paths) > 1:
            raise UserError("a table of runs is analysed on its own: give one TABLE, or add its rows to one table")
        runs, info = tables.read_table(paths[0], metric)
        _check_baseline(runs, baseline, strict_baseline)
        summary = tables.summarize(runs, info, baseline, metric, seed, min_effect, equal_noise=equal_noise)
    else:
        notes: list[str] = []
        runs = load_runs(paths, metric, notes=notes)
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


@entry_point(UserError)
def main(argv: list[str] | None = None) -> int:
    """Command line: analyse, print the table, write the report files; a user error is one line, exit 2."""
    parser = ArgumentParser(prog="python -m gptx.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path,
                        help="sweep or run folders holding result.json, or one table of runs (.csv, .jsonl, .json, "
                             ".parquet)")
    parser.add_argument("--baseline", default=None,
                        help="arm the others are compared with, as the report names it (default: baseline, the "
                             "sweep's base config; e.g. 'train.lr=0.0004')")
    parser.add_argument("--metric", default="test_loss", help="result.json field to analyse (lower: better)")
    parser.add_argument("--out", type=Path, help="output folder (default: the PATH, when only one is given; "
                        "<stem>-report/ beside a TABLE)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--min-effect", type=float, default=MIN_EFFECT,
                        help=f"smallest effect worth detecting (metric units), for seeds-needed (default {MIN_EFFECT})")
    parser.add_argument("--assume-equal-noise", action="store_true",
                        help="judge every arm against one pooled training noise (the REML model), one-run arms "
                             "included: more power, but false claims rise when an arm's noise is not the "
                             "baseline's (docs/analysis.md)")
    parser.add_argument("--no-plots", action="store_true", help="skip noise.png and curves.png")
    args = parser.parse_args(argv)
    if args.out is None and len(args.paths) > 1:
        raise UserError("several PATHs given: say where the report goes with --out DIR")
    if not args.min_effect > 0:
        raise UserError(f"--min-effect must be a positive number, got {args.min_effect}")
    first = args.paths[0]
    out = args.out or (first if first.is_dir() else
                       tables.report_dir(first) if tables.is_table(first) else first.parent)
    summary = write_report(args.paths, out, args.baseline or "baseline", args.metric, args.seed,
                           args.min_effect, plots=not args.no_plots, strict_baseline=args.baseline is not None,
                           equal_noise=args.assume_equal_noise)
    print(table(summary))
    print(f"\nreport written to {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

import sys
from pathlib import Path

from gptx.analysis import table as tables
from gptx.analysis.outputs import write_report
from gptx.analysis.report import table
from gptx.analysis.runs import UserError
from gptx.analysis.summary import MIN_EFFECT
from gptx.errors import ArgumentParser, entry_point

__all__ = ["main", "write_report"]  # write_report lives in gptx.analysis.outputs; kept here for callers


@entry_point()
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

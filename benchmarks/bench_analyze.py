"""Time the noise report on many result files (no metrics.jsonl): reading, the model, text; with and without plots.

    python -m benchmarks.bench_analyze [N_RUNS] [--json benchmarks/results/analyze.json]   # from the repo root

With --json the figures are written with the machine, CPU count, versions and date, and the docs quote
that file (benchmarks/README.md), so a figure in the docs always names where and when it was measured.
"""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from gptx.analyze import write_report

ARMS = ["baseline", "grad_clip", "qkv_bias", "grad_clip+qkv_bias", "no_dropout", "lr_schedule"]


def make_sweep(root: Path, n_runs: int) -> None:
    """n_runs result.json files: every arm at shared init seeds, half with a pinned train seed."""
    for i in range(n_runs):
        arm, seed = ARMS[i % len(ARMS)], i // len(ARMS)
        folder = root / f"intervention={arm}" / f"init_seed={seed}"
        folder.mkdir(parents=True)
        result = {
            "status": "completed",
            "intervention": arm.split("+"),
            "arm": arm,
            "init_seed": seed,
            "train_seed": 23 if seed % 2 else None,
            "data_seed": None,
            "replica": 0,
            "test_loss": 3.7 - 0.005 * (i % len(ARMS)) + 0.01 * math.sin(seed) + 0.003 * math.cos(7 * i),
            "init_weights_sha256": f"{seed:064x}",
            "final_weights_sha256": f"{i:064x}",
        }
        (folder / "result.json").write_text(json.dumps(result))


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time gptx.analyze on generated result files.")
    parser.add_argument("n_runs", nargs="?", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures, the machine and the date here")
    args = parser.parse_args(argv)
    record = {"benchmark": "bench_analyze", "n_runs": args.n_runs, "machine": cpu_name(), "cpus": os.cpu_count(),
              "python": sys.version.split()[0], "seconds": {},
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as tmp:
        make_sweep(Path(tmp) / "sweep", args.n_runs)
        for plots in (False, True):
            start = time.perf_counter()
            summary = write_report([Path(tmp) / "sweep"], Path(tmp) / f"out_{plots}", plots=plots)
            elapsed = time.perf_counter() - start
            record["seconds"]["with_plots" if plots else "without_plots"] = round(elapsed, 2)
            print(f"analysed {summary['n_runs']} result files ({len(summary['arms'])} arms, "
                  f"{summary['design']['n_blocks']} init blocks) in {elapsed:.2f} s "
                  f"{'with' if plots else 'without'} plots")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Time the noise report on many result files (no metrics.jsonl): reading, the model, text; with and without plots.

    python -m benchmarks.bench_analyze [N_RUNS]    # from the repository root
"""

import json
import math
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


def main() -> None:
    n_runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        make_sweep(Path(tmp) / "sweep", n_runs)
        for plots in (False, True):
            start = time.perf_counter()
            summary = write_report([Path(tmp) / "sweep"], Path(tmp) / f"out_{plots}", plots=plots)
            elapsed = time.perf_counter() - start
            print(f"analysed {summary['n_runs']} result files ({len(summary['arms'])} arms, "
                  f"{summary['design']['n_blocks']} init blocks) in {elapsed:.2f} s "
                  f"{'with' if plots else 'without'} plots")


if __name__ == "__main__":
    main()

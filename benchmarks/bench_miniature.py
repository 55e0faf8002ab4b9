"""python -m benchmarks.bench_miniature [--steps 300] [--runs 4] [--skip-compile] [--skip-packing]

What a whole miniature study costs on this CPU, in parts (prints figures; nothing asserted):

1. torch.compile on the `_miniature` preset (`+experiment=gpt2_small_chinchilla_miniature`): one run
   eager and one compiled, `--steps` steps each, one after the other with the same threads: wall time,
   the steady tokens/s (the last third of the steps, from metrics.jsonl), and start-up plus final outputs.
   Compiled and eager runs differ in the last bits (docs/performance.md), so adopting compile for the
   miniature presets would re-publish their tables.
2. The local_gpus launcher's packing of CPU runs: `--runs` runs of `--steps` steps as one multirun with
   max_parallel=1 (each run all the cores) and with max_parallel=2 (each half of them), wall time each.

Each run goes to a temporary folder. Compare figures only from one invocation on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "+experiment=gpt2_small_chinchilla_miniature"


def _train(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gptx.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"gptx.train {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def time_compile(steps: int, tmp: Path) -> list[str]:
    """Eager and compiled miniature runs of `steps` steps: wall time, train seconds and start-up."""
    lines = []
    common = [PRESET, f"train.max_steps={steps}", f"train.eval_every={steps}", "train.eval_batches=2",
              "train.sample_tokens=5", "data.test_sequences=8", f"train.log_every={max(1, steps // 3)}"]
    for compile_ in (False, True):
        run_dir = tmp / f"compile-{compile_}"
        wall = _train([*common, f"train.compile={str(compile_).lower()}", f"hydra.run.dir={run_dir}"], tmp)
        result = json.loads((run_dir / "result.json").read_text())
        # The last logging interval's tokens/s: the steady step, after the first interval's compile.
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        steady = [r["tokens_per_second"] for r in logged if "tokens_per_second" in r][-1]
        lines.append(f"{'compiled' if compile_ else 'eager':<9} {steps} steps: wall {wall:6.1f} s, training loop "
                     f"{result['wall_seconds']:6.1f} s ({result['tokens_per_second']:,.0f} tokens/s; last third "
                     f"{steady:,.0f} tokens/s), start-up and "
                     f"final outputs {wall - result['wall_seconds']:5.1f} s, test_loss {result['test_loss']:.6f}, "
                     f"final weights {result['final_weights_sha256'][:12]}")
    return lines


def time_packing(steps: int, runs: int, tmp: Path) -> list[str]:
    """One multirun of `runs` miniature runs on the local_gpus launcher, one at a time and two at a time."""
    lines = []
    seeds = ",".join(str(s) for s in range(1, runs + 1))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for parallel in (1, 2):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "gptx.train", "-m", PRESET, "hydra/launcher=local_gpus", "hydra.launcher.gpus=[]",
             f"hydra.launcher.max_parallel={parallel}", f"train.max_steps={steps}", f"train.eval_every={steps}",
             "train.eval_batches=2", "train.sample_tokens=5", "data.test_sequences=8", f"init_seed={seeds}",
             f"hydra.sweep.dir={tmp / f'packing-{parallel}'}"],
            cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-300:]}"
        threads = max(1, (os.cpu_count() or 1) // parallel)
        results = [json.loads(p.read_text()) for p in (tmp / f"packing-{parallel}").glob("*/result.json")]
        done = [r for r in results if r.get("status") == "completed"]
        lines.append(f"max_parallel={parallel} ({threads} threads a run): {runs} runs x {steps} steps in {wall:6.1f} s "
                     f"({wall / runs:5.1f} s a run), {len(done)} completed with {sorted({r['steps'] for r in done})} "
                     f"steps, loop {sum(r['wall_seconds'] for r in done) / max(1, len(done)):5.1f} s a run, {status}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Print the figures of both parts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps a run (the full preset has 3,000)")
    p.add_argument("--runs", type=int, default=4, help="runs in the packing multirun")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--skip-packing", action="store_true")
    args = p.parse_args(argv)
    import torch

    print(f"bench_miniature: torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_compile:
            print("\n".join(time_compile(args.steps, Path(tmp))))
        if not args.skip_packing:
            print("\n".join(time_packing(args.steps, args.runs, Path(tmp))))


if __name__ == "__main__":
    main()

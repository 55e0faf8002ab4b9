"""python -m benchmarks.bench_miniature [--steps 300] [--runs 4] [--skip-compile] [--skip-packing] [--step-timing]

What a whole miniature study costs on this CPU, in parts (prints figures; nothing asserted):

1. torch.compile on the `_miniature` preset (`+experiment=gpt2_small_chinchilla_miniature`): one run
   eager and one compiled, `--steps` steps each, one after the other with the same threads: wall time,
   the steady tokens/s (the last third of the steps, from metrics.jsonl), and start-up plus final outputs.
   Compiled and eager runs differ in the last bits (docs/performance.md), so adopting compile for the
   miniature presets would re-publish their tables.
2. The local_gpus launcher's packing of CPU runs: `--runs` runs of `--steps` steps as one multirun with
   max_parallel=1 (each run all the cores) and with max_parallel=2 (each half of them), wall time each.
3. One step, in parts (`--step-timing`): the loop's own `train_step` on the preset's batches, timed over 60
   steps after 5, in a fresh process each: one thread, two one-thread processes side by side, two threads,
   and one thread under bf16 autocast (another arithmetic: not what gptx does on a CPU); where one-thread
   step time goes (torch profiler); a bare 768 x 192 x 768 matmul's rate in fp32 and bf16; one validation
   and the test loss. The floor of a whole adaptive sweep follows from these (docs/performance.md).

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


STEP_WARMUP, STEP_TIMED = 5, 60


def one_step_timing(threads: int, bf16: bool, profile: bool) -> dict:
    """In this process: ms a step of the preset (the loop's train_step), and optionally where it goes."""
    import torch
    from hydra import compose, initialize_config_dir

    from gptx.config import CONF_DIR, from_dictconfig, register_schema
    from gptx.distributed import ALONE
    from gptx.loop import CheckpointClock, StepFlags, build_training, train_step
    from gptx.precision import Precision
    from gptx.scoring import split_loss

    torch.set_num_threads(threads)
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = from_dictconfig(compose(config_name="config", overrides=[PRESET.lstrip("+")]))

    class NoStop:
        requested = False

    with tempfile.TemporaryDirectory() as tmp:
        tr = build_training(cfg, Path(tmp))
    if bf16:
        tr.precision = Precision("amp_bf16", torch.bfloat16, False)
    flags = StepFlags(ALONE, NoStop(), CheckpointClock(None, True))  # type: ignore[arg-type]
    batch = cfg.train.batch_size

    def steps(first: int, n: int) -> None:
        for step in range(first, first + n):
            train_step(tr, step + 1, list(range(step * batch, (step + 1) * batch)), 4e-4, False, flags)

    steps(0, STEP_WARMUP)
    start = time.perf_counter()
    steps(STEP_WARMUP, STEP_TIMED)
    out = {"ms_a_step": (time.perf_counter() - start) / STEP_TIMED * 1e3, "threads": torch.get_num_threads()}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            steps(0, 20)
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        out["self_time_share"] = {e.key: e.self_cpu_time_total / total for e in ops[:8]}
        tr.model.eval()
        start = time.perf_counter()
        split_loss(tr.model, tr.data.val, cfg.train.eval_batches * batch, batch, tr.device, tr.precision)
        out["one_validation_s"] = time.perf_counter() - start
        start = time.perf_counter()
        split_loss(tr.model, tr.data.test, cfg.data.test_sequences, batch, tr.device, tr.precision)
        out["test_loss_s"] = time.perf_counter() - start
        out["matmul_gflops"] = {str(dtype).removeprefix("torch."): _matmul_gflops(dtype)
                                for dtype in (torch.float32, torch.bfloat16)}
    return out


def _matmul_gflops(dtype) -> float:  # noqa: ANN001 - a torch dtype
    """A bare [768, 192] x [192, 768] matmul's rate on this process's threads (the miniature's MLP shape)."""
    import torch

    a, b = torch.randn(768, 192, dtype=dtype), torch.randn(192, 768, dtype=dtype)
    for _ in range(5):
        a @ b
    start, n = time.perf_counter(), 200
    for _ in range(n):
        a @ b
    return 2 * 768 * 192 * 768 * n / (time.perf_counter() - start) / 1e9


def _step_process(threads: int, bf16: bool = False, profile: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "benchmarks.bench_miniature", "--one-step", "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([*args, *(["--bf16"] if bf16 else []), *(["--profile"] if profile else [])],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).resolve().parents[1])


def _step_result(proc: subprocess.Popen) -> dict:
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"bench_miniature --one-step failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


def time_steps() -> list[str]:
    """One step of the preset in fresh processes: 1 thread, two such side by side, 2 threads, bf16."""
    alone = _step_result(_step_process(1, profile=True))
    pair = [_step_result(proc) for proc in [_step_process(1), _step_process(1)]]
    two = _step_result(_step_process(2))
    bf16 = _step_result(_step_process(1, bf16=True))
    share = ", ".join(f"{op} {frac:.0%}" for op, frac in alone["self_time_share"].items())
    rates = ", ".join(f"{dtype} {rate:.0f}" for dtype, rate in alone["matmul_gflops"].items())
    return [f"one thread: {alone['ms_a_step']:.1f} ms a step ({STEP_TIMED} timed after {STEP_WARMUP})",
            f"two one-thread processes side by side: {pair[0]['ms_a_step']:.1f} and {pair[1]['ms_a_step']:.1f} ms",
            f"two threads: {two['ms_a_step']:.1f} ms a step",
            f"one thread, bf16 autocast (not gptx's CPU arithmetic): {bf16['ms_a_step']:.1f} ms a step",
            f"one-thread self time: {share}",
            f"bare 768x192x768 matmul, one thread, GFLOP/s: {rates}",
            f"one validation ({PRESET} eval_batches): {alone['one_validation_s']:.2f} s; "
            f"test loss: {alone['test_loss_s']:.2f} s"]


def main(argv: list[str] | None = None) -> None:
    """Print the figures of the parts asked for."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--steps", type=int, default=300, help="optimizer steps a run (the full preset has 3,000)")
    p.add_argument("--runs", type=int, default=4, help="runs in the packing multirun")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--skip-packing", action="store_true")
    p.add_argument("--step-timing", action="store_true", help="part 3: one step in parts (about 40 s)")
    p.add_argument("--one-step", action="store_true", help=argparse.SUPPRESS)  # part 3's worker process
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one_step:
        print(json.dumps(one_step_timing(args.threads, args.bf16, args.profile)))
        return
    import torch

    print(f"bench_miniature: torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_compile:
            print("\n".join(time_compile(args.steps, Path(tmp))))
        if not args.skip_packing:
            print("\n".join(time_packing(args.steps, args.runs, Path(tmp))))
    if args.step_timing:
        print("\n".join(time_steps()))


if __name__ == "__main__":
    main()

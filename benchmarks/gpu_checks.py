"""python3 benchmarks/gpu_checks.py [--dry-run] [--out DIR] [--work DIR] [--only PHASE,...] [--timeout PHASE=S]

The GPU checks of benchmarks/gpu.sh, one phase after another, each in its own process group under its
own timeout; a failed or timed-out phase is recorded and the next one runs. Phases, in order of value:

  environment   versions, GPU, and which SDPA kernel runs for dropout 0.1/0.0 x deterministic off/on,
                with torch's default backends and with gptx's pinning (gptx.attention_backend)
  bench         gptx.bench on gpt2_small, 12 x 1024 tokens, bf16: eager, eager+deterministic, compiled,
                compiled+deterministic, compiled/full-logits-loss (tokens/s, MFU, peak memory, compile s);
                then benchmarks/check_loss.py: the sliced loss agrees with the loss through full logits
  profile       the eager training step under torch.profiler: its top kernels by device time
  determinism   two deterministic eager runs: identical final weights; and a run stopped by SIGTERM
                after a checkpoint, then resumed: identical to the uninterrupted one
  compiled_determinism  two deterministic compiled runs: identical final weights
  faults        the CUDA cases of the fault-test suite (tests/faults -k cuda)

Only a handful of small files go to --out ($OUT): summary.json, environment.json, bench.json,
profile.txt, log.txt. Run folders, weights and phase logs stay in --work. `--dry-run` runs the same
phases on the CPU at a tiny size (torch.compile skipped unless --compile): what the suite tests.
Exit status 0 when every phase passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PHASES = ("environment", "bench", "profile", "determinism", "compiled_determinism", "faults")
# Seconds per phase on one H100: 540 in all, inside the device tool's 600 s a command.
TIMEOUTS = {"environment": 40, "bench": 200, "profile": 30, "determinism": 120, "compiled_determinism": 100,
            "faults": 50}
DRY_TIMEOUTS = {"environment": 60, "bench": 180, "profile": 60, "determinism": 300, "compiled_determinism": 600,
                "faults": 240}
TINY_MODEL = ["model=gpt2_tiny", "model.context_length=32", "model.d_model=32", "model.n_heads=2", "model.n_layers=1"]


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes and switches of this invocation: gpt2_small on CUDA, or the tiny CPU dry run."""
    if args.dry_run:
        return {"device": "cpu", "model": "gpt2_tiny", "model_overrides": TINY_MODEL, "batch": 2, "seq": 32,
                "n_heads": 2, "head_dim": 16, "bench_steps": 2, "bench_warmup": 1, "run_steps": 6,
                "checkpoint_every": 2, "compile": args.compile, "probe_dtype": "float32"}
    return {"device": "cuda", "model": "gpt2_small", "model_overrides": ["model=gpt2_small"], "batch": 12,
            "seq": 1024, "n_heads": 12, "head_dim": 64, "bench_steps": 10, "bench_warmup": 2, "run_steps": 10,
            "checkpoint_every": 5, "compile": True, "probe_dtype": "bfloat16"}


# --- the phases, each run in a child process: `gpu_checks.py --phase NAME`; each returns its figures ---

def phase_environment(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """Versions, the GPU and the SDPA kernels; writes environment.json."""
    import torch

    from gptx.attention_backend import pin_attention_backends, sdpa_backend, sdpa_kernels_run
    from gptx.hardware import environment

    device = torch.device(s["device"])
    env: dict[str, Any] = {**environment(device), "python_executable": sys.executable}
    if device.type == "cuda":
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
        env["nvidia_smi"] = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                      "--format=csv,noheader"])
    dtype = getattr(torch, s["probe_dtype"])
    probe = []
    default_cudnn = torch.backends.cuda.cudnn_sdp_enabled()
    for dropout in (0.1, 0.0):
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            row: dict[str, Any] = {"dropout": dropout, "deterministic": deterministic}
            for label in ("torch_default", "gptx"):
                if label == "gptx":
                    pin_attention_backends(dropout)
                else:
                    torch.backends.cuda.enable_cudnn_sdp(default_cudnn)
                shape = (device, dtype, s["n_heads"], s["head_dim"], s["seq"], dropout)
                row[label] = {"dispatcher": sdpa_backend(*shape), "kernels": _or_error(sdpa_kernels_run, *shape)}
            probe.append(row)
    torch.use_deterministic_algorithms(False)
    env["sdpa_probe"] = probe
    env["sdpa_flags"] = {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")()
                         for name in ("flash", "mem_efficient", "math", "cudnn")}
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    cudnn_with_dropout = any("cudnn" in row["gptx"]["kernels"] for row in probe if row["dropout"] > 0)
    if cudnn_with_dropout:
        raise RuntimeError("cuDNN attention ran with dropout > 0 despite gptx's pinning")
    return {"device": env["device"], "torch": env["versions"]["torch"],
            "sdpa": {f"dropout={r['dropout']},deterministic={r['deterministic']}": r["gptx"]["kernels"]
                     for r in probe}}


def phase_bench(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """gptx.bench's variants; writes bench.json."""
    from gptx.tools.bench import format_report, parse_args, run

    variants = ["eager", "eager+deterministic"]
    variants += (["compiled", "compiled+deterministic", "compiled/full-logits-loss"] if s["compile"]
                 else ["eager/full-logits-loss"])
    argv = ["--model", s["model"], "--batch-size", str(s["batch"]), "--seq-len", str(s["seq"]), "--device",
            s["device"], "--steps", str(s["bench_steps"]), "--warmup", str(s["bench_warmup"]),
            "--variants", ",".join(variants)] + (["--compile"] if s["compile"] else [])
    if s["device"] == "cpu":
        argv += ["--threads", "1"]
    report = run(parse_args(argv))
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    rows = {r["variant"]: r for r in report["rows"]}
    # The sliced head + cross-entropy against the plain loss through full logits, on one batch.
    loss_check = subprocess.run([sys.executable, str(REPO / "benchmarks" / "check_loss.py"), "--device", s["device"],
                                 "--model", s["model"], "--batch-size", str(s["batch"]), "--seq-len", str(s["seq"])],
                                cwd=REPO, capture_output=True, text=True, check=False)
    print(loss_check.stdout + loss_check.stderr)
    missing = [v for v in variants if not rows.get(v, {}).get("step_seconds")]
    if missing:
        raise RuntimeError(f"no timing for {missing}: {[rows.get(v, {}).get('note') for v in missing]}")
    if loss_check.returncode != 0:
        raise RuntimeError(f"the sliced loss disagrees with full logits: {loss_check.stdout[-500:]}")
    return {"sliced_loss_agrees": True, **{
        v: {k: rows[v][k] for k in ("tokens_per_second", "mfu", "peak_memory_bytes", "compile_seconds")}
        for v in variants}}


def phase_profile(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """The eager step's top kernels by device time (CPU time in the dry run); writes profile.txt."""
    import torch

    from gptx.config import DeviceKind, TrainConfig
    from gptx.tools.bench import Variant, make_step, model_config

    device = torch.device(s["device"])
    step = make_step(model_config(s["model"]), device, TrainConfig(device=DeviceKind(s["device"]), tf32=True),
                     s["batch"], s["seq"], Variant("eager", False, False))
    for _ in range(2):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=90)
    (out / "profile.txt").write_text(f"{s['model']} {s['batch']} x {s['seq']} eager, 3 steps, by {sort}\n{table}\n")
    return {"rows": 30, "sorted_by": sort}


def _train_runner(s: dict[str, Any], work: Path):
    """A function training one deterministic run of the phase's size in work/runs/NAME; returns result.json."""
    runs = work / "runs"

    def train(name: str, compile_: bool, fault: str | None = None) -> dict[str, Any]:
        args = [*s["model_overrides"], f"train.device={s['device']}", "train.deterministic=true",
                f"train.compile={str(compile_).lower()}", f"train.max_steps={s['run_steps']}",
                f"train.batch_size={s['batch']}", f"train.seq_len={s['seq']}", f"train.eval_every={s['run_steps']}",
                "train.eval_batches=2", "data.test_sequences=8", "train.sample_tokens=5",
                f"train.checkpoint_every={s['checkpoint_every']}", f"hydra.run.dir={runs / name}"]
        env = {k: v for k, v in os.environ.items() if k != "GPTX_FAULT"}
        if fault:
            env["GPTX_FAULT"] = fault
        print(f"-- {name}: python3 -m gptx.train {' '.join(args)}" + (f"  (GPTX_FAULT={fault})" if fault else ""),
              flush=True)
        subprocess.run([sys.executable, "-m", "gptx.train", *args], cwd=work, env=env, check=False)
        return json.loads((runs / name / "result.json").read_text())

    return train


def _checked(checks: dict[str, bool], results: dict[str, Any]) -> dict[str, Any]:
    results["checks"] = checks
    for name, ok in checks.items():
        print(f"{name}: {'IDENTICAL' if ok and 'identical' in name else ok}")
    if not all(checks.values()):
        raise RuntimeError(f"failed: {[name for name, ok in checks.items() if not ok]}")
    return results


def phase_determinism(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """Same config twice, eager: identical weights; SIGTERM after a checkpoint + resume: identical too."""
    train = _train_runner(s, work)
    checks = {}
    a, b = train("eager-1", False), train("eager-2", False)
    checks["eager_identical"] = a["final_weights_sha256"] == b["final_weights_sha256"]
    stopped = train("resumed", False, fault=f"checkpoint@{s['checkpoint_every']}=TERM")
    resumed = train("resumed", False)
    checks["stopped_by_sigterm"] = stopped["status"] == "interrupted"
    checks["resumed_identical"] = resumed["final_weights_sha256"] == a["final_weights_sha256"]
    return _checked(checks, {
        "eager": [a["final_weights_sha256"], b["final_weights_sha256"]], "resumed": resumed["final_weights_sha256"],
        "test_loss": a["test_loss"], "sdpa_backend": a.get("sdpa_backend"), "precision": a["precision"],
        "device": a["device"], "eager_tokens_per_second": a["tokens_per_second"]})


def phase_compiled_determinism(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """Same config twice, compiled: identical weights (the dry run skips it unless --compile)."""
    if not s["compile"]:
        print("skipped: the dry run does not compile (pass --compile)")
        return {"skipped": "the dry run does not compile (pass --compile)"}
    train = _train_runner(s, work)
    c, d = train("compiled-1", True), train("compiled-2", True)
    return _checked({"compiled_identical": c["final_weights_sha256"] == d["final_weights_sha256"]}, {
        "compiled": [c["final_weights_sha256"], d["final_weights_sha256"]], "test_loss": c["test_loss"],
        "run_status": c["status"], "compiled_tokens_per_second": c["tokens_per_second"]})


def phase_faults(s: dict[str, Any], out: Path, work: Path) -> dict[str, Any]:
    """The CUDA cases of the fault-test suite (in the dry run: the RNG round trip on the CPU)."""
    select = ["tests/faults", "-k", "cuda"] if s["device"] == "cuda" else [
        "tests/faults/test_12_rng_round_trip.py", "-k", "cpu"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *select],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if proc.returncode not in (0,):
        raise RuntimeError(f"pytest exit status {proc.returncode}")
    return {"pytest": " ".join(select)}


# --- the driver -------------------------------------------------------------------------------------

def _command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable: {err}"


def _or_error(fn: Any, *args: Any) -> str:
    try:
        return fn(*args)
    except Exception as err:  # a backend that cannot run this shape is itself a finding
        return f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"


def run_phase(name: str, args: argparse.Namespace, out: Path, work: Path, timeout: float) -> dict[str, Any]:
    """One phase in a child process group, killed whole at its timeout; returns its summary entry."""
    log_path, result_path = work / f"{name}.log", work / f"{name}.json"
    result_path.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--out", str(out), "--work", str(work)]
    argv += ["--dry-run"] * args.dry_run + ["--compile"] * args.compile
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            _kill_group(proc)
    entry: dict[str, Any] = {"seconds": round(time.perf_counter() - start, 1), "timeout": timeout}
    if code is None:
        entry["status"] = "timeout"
    elif code == 0 and result_path.exists():
        entry.update({**json.loads(result_path.read_text()), "status": "ok"})
    else:
        entry["status"] = "failed"
        entry["exit_status"] = code
    if entry["status"] != "ok":
        entry["log_tail"] = log_path.read_text(errors="replace").splitlines()[-15:]
    print(f"== {name}: {entry['status']} ({entry['seconds']} s of {timeout:g})", flush=True)
    return entry


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the phase's whole process group (its training runs too), SIGKILL 15 s later."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    """Run the phases (or, with --phase, one of them in this process)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--dry-run", action="store_true", help="the same phases on the CPU at a tiny size")
    p.add_argument("--compile", action="store_true", help="the dry run compiles too (minutes on a CPU)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks" / "gpu-out"))
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gptx-gpu-work")
    p.add_argument("--only", type=lambda t: t.split(","), default=list(PHASES), help="phases to run, in order")
    p.add_argument("--timeout", action="append", default=[], metavar="PHASE=SECONDS", help="one phase's limit")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out, args.work = args.out.resolve(), args.work.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    s = settings(args)
    if args.phase:  # the child: run one phase, leave its figures for the driver
        figures = globals()[f"phase_{args.phase}"](s, args.out, args.work)
        (args.work / f"{args.phase}.json").write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    unknown = set(args.only) - set(PHASES)
    if unknown:
        p.error(f"--only {','.join(sorted(unknown))}: unknown; choose from {','.join(PHASES)}")
    timeouts = dict(DRY_TIMEOUTS if args.dry_run else TIMEOUTS)
    for item in args.timeout:
        name, _, seconds = item.partition("=")
        if name not in PHASES or not seconds:
            p.error(f"--timeout {item}: expected PHASE=SECONDS with PHASE one of {','.join(PHASES)}")
        timeouts[name] = float(seconds)
    summary: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": args.dry_run,
                               "settings": s, "work": str(args.work), "phases": {}}
    logs = []
    for name in args.only:
        print(f"== {name} (limit {timeouts[name]:g} s)", flush=True)
        summary["phases"][name] = run_phase(name, args, args.out, args.work, timeouts[name])
        text = (args.work / f"{name}.log").read_text(errors="replace").splitlines()
        logs.append(f"===== {name}: {summary['phases'][name]['status']}\n" + "\n".join(text[-120:]))
        summary["passed"] = all(ph["status"] == "ok" for ph in summary["phases"].values())
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # after every phase
        (args.out / "log.txt").write_text("\n".join(logs) + "\n")
    print(json.dumps({n: ph["status"] for n, ph in summary["phases"].items()}))
    print("ALL PASSED" if summary["passed"] else "SOME FAILED")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""python -m gptx.bench [--model gpt2_small] [--steps 10] [--batch-size 8] [--seq-len 1024] [--compile]

Training throughput (tokens/s, MFU) of a model preset on this machine, for each variant: eager or
torch.compile, deterministic kernels or not, and the step as it was before each speed-up (the loss
through full [tokens, vocab] logits; the multi-tensor `foreach` AdamW instead of the fused one); and the
data loader alone (TrainOrder.step_indices + Split.sequences). A step is the loop's (`gptx.loop.train_step`):
forward under the run's autocast, float32 cross-entropy through the sliced head, backward, fused AdamW,
host sync on the loss. Variants run interleaved, a step each in turn, after their warm-up steps, with
the same threads; the figure reported is the median step.

`--compare-allocator` runs the eager step in two processes, with and without gptx's glibc setting
(gptx.allocator; it is per process, so it cannot be switched inside one), alternating rounds.
`--default-run` also times the whole default `python -m gptx.train` in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gptx import allocator
from gptx.attention_backend import pin_attention_backends
from gptx.config import CONF_DIR, ConfigError, DataConfig, DataFormat, DeviceKind, ModelConfig, TrainConfig
from gptx.data import TrainOrder, load_data
from gptx.errors import ArgumentParser, entry_point
from gptx.hardware import mfu, peak_flops, resolve_device
from gptx.model import GPTModel, build_model, configure_optimizer, flops_per_token
from gptx.precision import resolve_precision
from gptx.result import load_result
from gptx.scoring import lm_loss
from gptx.seeding import CUBLAS_WORKSPACE, configure_determinism


@dataclass
class Variant:
    """One way of running the training step, and its timings."""

    name: str
    compiled: bool
    deterministic: bool
    full_logits: bool = False
    """Loss through the whole [tokens, vocab] logits, as before the sliced head."""
    foreach_adamw: bool = False
    """The multi-tensor AdamW instead of the fused kernel."""
    step: Callable[[], float] | None = None
    seconds: list[float] = field(default_factory=list)
    note: str = ""
    first_step_seconds: float | None = None
    peak_memory_bytes: int | None = None
    """CUDA: the most memory allocated during one of its steps (every variant's weights resident)."""
    step_memory_bytes: int | None = None
    """CUDA: the most a step allocated on top of what was allocated before it (activations, logits, grads)."""


def model_config(name: str) -> ModelConfig:
    """A model preset from gptx/conf/model/NAME.yaml, validated by the schema."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ConfigError(f"--model {name}: unknown preset; choose one of {', '.join(names)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path)))


def make_step(cfg: ModelConfig, device: torch.device, train_cfg: TrainConfig, batch: int, seq_len: int,
              variant: Variant) -> Callable[[], float]:
    """A closure running one optimizer step on a fixed random batch; returns the loss (a host sync)."""
    precision = resolve_precision(train_cfg, device)
    model = build_model(cfg, init_seed=0).to(device)
    model.train()
    optimizer = configure_optimizer(model, train_cfg.lr, (train_cfg.beta1, train_cfg.beta2), train_cfg.weight_decay,
                                    fused=not variant.foreach_adamw)
    pin_attention_backends(cfg.dropout)
    forward = torch.compile(model) if variant.compiled else model
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=torch.Generator().manual_seed(0))
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)

    def step() -> float:
        with precision.autocast(device):
            loss = lm_loss(forward(x), y) if variant.full_logits else forward(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def time_variants(variants: list[Variant], steps: int, warmup: int, device: torch.device) -> None:
    """Warm each variant up, then time `steps` steps of each, interleaved."""
    for variant in variants:
        configure_determinism(variant.deterministic)
        for i in range(warmup):
            try:
                seconds = _timed(variant, device)
            except Exception as err:  # a compile failure must not hide the other variants' figures
                variant.note = f"skipped: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
                variant.step = None
                break
            if i == 0:
                variant.first_step_seconds = seconds
    for _ in range(steps):
        for variant in variants:
            if variant.step is not None:
                configure_determinism(variant.deterministic)
                variant.seconds.append(_timed(variant, device))


def _timed(variant: Variant, device: torch.device) -> float:
    """One step's seconds; on CUDA also the variant's peak memory so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    variant.step()  # type: ignore[misc]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        variant.peak_memory_bytes = max(variant.peak_memory_bytes or 0, peak)
        variant.step_memory_bytes = max(variant.step_memory_bytes or 0, peak - before)
    return time.perf_counter() - start


def time_dataloader(data_cfg: DataConfig, batch: int, seq_len: int, vocab_size: int, steps: int) -> list[float]:
    """Seconds per batch of TrainOrder.step_indices + Split.sequences (shuffled order, as data_seed=0)."""
    split = load_data(data_cfg, seq_len, vocab_size).train
    order = TrainOrder(split.n_sequences, batch, data_seed=0)
    seconds = []
    for step in range(steps):
        start = time.perf_counter()
        split.sequences(order.step_indices(step))
        seconds.append(time.perf_counter() - start)
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every variant and the data loader; returns what main prints."""
    cfg = model_config(args.model)
    seq_len = args.seq_len or cfg.context_length
    if seq_len > cfg.context_length:
        raise ConfigError(f"--seq-len {seq_len} is longer than {args.model}'s context ({cfg.context_length})")
    torch.set_num_threads(args.threads)
    # Before the first cuBLAS handle, so the deterministic variants can run in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    train_cfg = TrainConfig(device=DeviceKind(args.device), tf32=True, amp=True)
    device = resolve_device(train_cfg.device)
    precision = resolve_precision(train_cfg, device)
    variants = [] if args.dataloader_only else [
        Variant("eager", False, False), Variant("eager+deterministic", False, True),
        Variant("eager/full-logits-loss", False, False, full_logits=True),
        Variant("eager/foreach-adamw", False, False, foreach_adamw=True),
        Variant("eager/as-before", False, False, full_logits=True, foreach_adamw=True)]
    if args.compile and not args.dataloader_only:
        variants += [Variant("compiled", True, False), Variant("compiled+deterministic", True, True),
                     Variant("compiled/full-logits-loss", True, False, full_logits=True)]
    if args.variants:
        known = {v.name for v in variants}
        if set(args.variants) - known:
            raise ConfigError(f"--variants {','.join(sorted(set(args.variants) - known))}: unknown; "
                              f"choose from {', '.join(sorted(known))}")
        variants = [v for v in variants if v.name in args.variants]
    for variant in variants:
        variant.step = make_step(cfg, device, train_cfg, args.batch_size, seq_len, variant)
    time_variants(variants, args.steps, args.warmup, device)
    with torch.device("meta"):
        per_token = flops_per_token(GPTModel(cfg), seq_len)
    dtype = precision.autocast_dtype or torch.float32
    peak = peak_flops(device, dtype, tf32=train_cfg.tf32)
    tokens_per_step = args.batch_size * seq_len
    rows = []
    for v in variants:
        median = statistics.median(v.seconds) if v.seconds else None
        tps = tokens_per_step / median if median else None
        rows.append({"variant": v.name, "step_seconds": median, "tokens_per_second": tps,
                     "mfu": mfu(tps, per_token, peak) if tps else None, "steps": len(v.seconds),
                     "first_step_seconds": v.first_step_seconds,
                     "compile_seconds": v.first_step_seconds - median if v.compiled and median and
                     v.first_step_seconds else None,
                     "peak_memory_bytes": v.peak_memory_bytes, "step_memory_bytes": v.step_memory_bytes,
                     "note": v.note})
    if not args.compile and not args.dataloader_only and not args.variants:
        rows.append({"variant": "compiled", "step_seconds": None, "tokens_per_second": None, "mfu": None,
                     "steps": 0, "first_step_seconds": None, "note": "skipped: pass --compile"})
    data_cfg = DataConfig(name="tokens", format=DataFormat.tokens, path=str(args.data)) if args.data else DataConfig()
    loader = time_dataloader(data_cfg, args.batch_size, seq_len, cfg.vocab_size, max(20, 5 * args.steps))
    median = statistics.median(loader)
    rows.append({"variant": "dataloader", "step_seconds": median, "tokens_per_second": tokens_per_step / median,
                 "mfu": None, "steps": len(loader), "first_step_seconds": None,
                 "note": f"{data_cfg.name}, shuffled order, CPU batch only"})
    if args.compare_allocator:
        rows += compare_allocator(args)
    if args.default_run:
        rows.append(time_default_run())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"model": cfg.name, "device": f"{device.type} ({name})", "precision": precision.label,
            "threads": torch.get_num_threads(), "batch_size": args.batch_size, "seq_len": seq_len,
            "tokens_per_step": tokens_per_step, "flops_per_token": per_token, "peak_flops": peak,
            "torch": torch.__version__, "allocator": allocator.keep_freed_memory() if args.allocator == "on"
            else {"applied": False, "why": "--allocator off"}, "rows": rows}


def compare_allocator(args: argparse.Namespace, rounds: int = 2) -> list[dict[str, Any]]:
    """The eager step (today's and as before the speed-ups) with and without the glibc setting, each setting
    in its own process, rounds alternating. `eager/as-before/allocator-off` is the step as it was."""
    variants = ("eager", "eager/as-before")
    seconds: dict[str, list[float]] = {f"{v}/allocator-{mode}": [] for mode in ("on", "off") for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for mode in ("on", "off"):
                out = Path(tmp) / f"{mode}{round_}.json"
                argv = [sys.executable, "-m", "gptx.bench", "--model", args.model, "--steps", str(args.steps),
                        "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--device", args.device,
                        "--threads", str(args.threads), "--variants", ",".join(variants), "--allocator", mode,
                        "--json", str(out)] + (["--seq-len", str(args.seq_len)] if args.seq_len else [])
                env = {k: v for k, v in os.environ.items() if k not in allocator.USER_VARIABLES}
                subprocess.run(argv, check=True, capture_output=True, env=env)
                for row in json.loads(out.read_text())["rows"]:
                    if row["variant"] in variants:
                        seconds[f"{row['variant']}/allocator-{mode}"].append(row["step_seconds"])
    tokens = args.batch_size * (args.seq_len or model_config(args.model).context_length)
    return [{"variant": name, "step_seconds": statistics.median(s), "tokens_per_second": tokens / statistics.median(s),
             "mfu": None, "steps": rounds * args.steps, "first_step_seconds": None,
             "note": f"own process; median of {rounds} alternating rounds"} for name, s in seconds.items()]


def time_default_run() -> dict[str, Any]:
    """Wall time of the default `python -m gptx.train` (gpt2_tiny, bundled data), in a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gptx.train", f"hydra.run.dir={tmp}/run"], check=True,
                       capture_output=True, cwd=tmp)
        wall = time.perf_counter() - start
        result = load_result(Path(tmp) / "run")
    return {"variant": "default-run", "step_seconds": wall / result.steps, "tokens_per_second":
            result.tokens / wall, "mfu": None, "steps": result.steps, "first_step_seconds": None,
            "note": f"python -m gptx.train: {wall:.1f} s wall, test_loss {result.test_loss:.6f}"}


def format_report(report: dict[str, Any]) -> str:
    """The table main prints: a header line, then one line a variant."""
    peak = f"{report['peak_flops'] / 1e12:g} TFLOP/s" if report["peak_flops"] else "unknown (no MFU)"
    lines = [f"gptx.bench  model={report['model']}  device={report['device']}  precision={report['precision']}  "
             f"threads={report['threads']}  torch={report['torch']}",
             f"batch={report['batch_size']}  seq_len={report['seq_len']}  tokens/step={report['tokens_per_step']}"
             f"  flops/token={report['flops_per_token']:,.0f}  peak={peak}",
             f"{'variant':<32}{'step_ms':>10}{'tokens/s':>14}{'MFU':>8}  note"]
    for row in report["rows"]:
        if row["step_seconds"] is None:
            lines.append(f"{row['variant']:<32}{'-':>10}{'-':>14}{'-':>8}  {row['note']}")
            continue
        mfu_text = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        note = row["note"] or f"median of {row['steps']}" + (
            f", first step {row['first_step_seconds']:.1f} s" if row["first_step_seconds"] else "")
        lines.append(f"{row['variant']:<32}{1000 * row['step_seconds']:>10.2f}"
                     f"{row['tokens_per_second']:>14,.0f}{mfu_text:>8}  {note}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(prog="python -m gptx.bench", description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="gpt2_tiny", help="a preset in gptx/conf/model")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compiles)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: model context)")
    p.add_argument("--device", choices=[k.value for k in DeviceKind], default="auto")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start on CPU)")
    p.add_argument("--dataloader-only", action="store_true", help="time only the data loader")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--data", type=Path, default=None,
                   help="token directory for the data-loader timing (default: the bundled Shakespeare)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--variants", type=lambda text: text.split(","), default=None,
                   help="comma-separated variant names to run (default: all)")
    p.add_argument("--allocator", choices=["on", "off"], default="on",
                   help="gptx's glibc setting that keeps freed CPU buffers (gptx.allocator), as train applies it")
    p.add_argument("--compare-allocator", action="store_true",
                   help="also time the eager step with the allocator setting on and off, in two processes")
    p.add_argument("--default-run", action="store_true", help="also time the whole default python -m gptx.train")
    args = p.parse_args(argv)
    for flag in ("steps", "warmup", "batch_size", "threads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    return args


@entry_point()
def main(argv: list[str] | None = None) -> None:
    """Entry point: prints the table (one error line and exit status 2 for a user error)."""
    args = parse_args(argv)
    if args.allocator == "on":
        allocator.keep_freed_memory()
    report = run(args)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

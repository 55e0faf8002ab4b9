"""python -m gptx.train [-m] [model=gpt2_small] [intervention=[grad_clip,qkv_bias]] [init_seed=22,42,67]

One deterministic GPT-2 training run (or, with -m, a Hydra multirun of them). `train(cfg, run_dir)`
is the whole run, free of Hydra; `main` is the thin Hydra entry around it. Under
`torchrun --nproc_per_node=N -m gptx.train …` one run trains on N processes (see gptx.distributed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from gptx import checkpoint as ckpt
from gptx.config import (
    CONF_DIR,
    ConfigError,
    GptxConfig,
    config_sha256,
    from_dictconfig,
    register_schema,
    to_plain_dict,
)
from gptx.data import TokenData, TrainOrder, data_sha256, load_data
from gptx.distributed import (
    World,
    all_agree,
    barrier,
    broadcast_object,
    gather_objects,
    init_world,
    mean_over_ranks,
    rank_seed,
    shutdown,
)
from gptx.evaluation import greedy_sample, lm_loss, split_loss
from gptx.faults import maybe_fire
from gptx.hardware import mfu, peak_flops
from gptx.hashing import parameter_sha256s, weights_sha256
from gptx.model import GPTModel, build_model, count_parameters, flops_per_token
from gptx.outputs import (
    MODEL_FILE,
    RESULT_FILE,
    SAMPLE_FILE,
    MetricsLog,
    environment,
    read_result,
    save_weights,
    write_atomic,
    write_json,
)
from gptx.precision import Precision, resolve_device, resolve_precision
from gptx.progress import Progress
from gptx.schedule import lr_at, total_steps
from gptx.seeding import capture_rng_state, configure_determinism, restore_rng_state, seed_everything
from gptx.signals import StopRequest
from gptx.sweep import register_resolvers
from gptx.tokenizer import tokenizer_for

log = logging.getLogger("gptx.train")


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the step's update was not applied."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite loss {loss} at step {step}")
        self.step = step


@dataclass
class Run:
    """Everything built for a run before its first step."""

    cfg: GptxConfig
    run_dir: Path
    world: World
    device: torch.device
    precision: Precision
    data: TokenData
    model: GPTModel
    forward: torch.nn.Module  # the model itself, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    n_steps: int
    seq_len: int
    micro_batch: int  # sequences a forward pass on this process
    init_weights_sha256: str
    init_param_sha256: dict[str, str]


def train(cfg: GptxConfig, run_dir: Path) -> dict[str, Any]:
    """Train (or resume, or skip if already completed) one run in run_dir; returns its result."""
    world = init_world(resolve_device(cfg.train.device).type == "cuda")
    try:
        # Every rank uses rank 0's folder (Hydra may have named one per process start time).
        return _train(cfg, Path(broadcast_object(world, str(run_dir))), world)  # type: ignore[arg-type]
    finally:
        shutdown(world)


def _train(cfg: GptxConfig, run_dir: Path, world: World) -> dict[str, Any]:
    if not world.is_main:  # rank 0 speaks for the run; the others only warn
        logging.getLogger("gptx").setLevel(logging.WARNING)
    plain = to_plain_dict(cfg)
    cfg_sha = config_sha256(plain)
    previous = read_result(run_dir)
    if previous and previous.get("status") == "completed" and not cfg.overwrite:
        if previous.get("config_sha256") == cfg_sha:
            return {**previous, "skipped": True}
        raise ConfigError(f"{run_dir} holds a completed run of another config; choose another folder "
                          "or pass overwrite=true")
    # overwrite=true replaces a finished run or another config's folder, never a run resuming its own.
    replacing = previous is not None and (previous.get("status") == "completed"
                                          or previous.get("config_sha256") != cfg_sha)
    if cfg.overwrite and replacing and world.is_main:
        ckpt.remove_checkpoints(run_dir)
    barrier(world)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        resume = ckpt.load_latest(run_dir, cfg_sha)
    except ckpt.CheckpointError:
        if not cfg.overwrite:
            raise
        barrier(world)
        if world.is_main:
            ckpt.remove_checkpoints(run_dir)
        barrier(world)
        resume = None
    base = {"status": "running", "intervention": cfg.intervention_names, "arm": cfg.arm,
            "init_seed": cfg.init_seed, "train_seed": cfg.train_seed, "data_seed": cfg.data_seed,
            "replica": cfg.replica, "model": cfg.model.name, "data": cfg.data.name, "config_sha256": cfg_sha,
            "world_size": world.size}
    save = _MainRankWriter(world, run_dir)
    start = time.perf_counter()
    run = build_run(cfg, run_dir, world)
    save.result(base)
    warnings = precision_warnings(cfg, run.device)
    for warning in warnings:
        log.warning(warning)
    result = {**base, **environment(run.device), "precision": run.precision.label, "warnings": warnings,
              "data_sha256": data_sha256(run.data) if world.is_main else None,
              "n_params": count_parameters(run.model), "init_weights_sha256": run.init_weights_sha256,
              "planned_steps": run.n_steps}
    position = LoopPosition()
    if resume is not None:
        position = resume_from(run, resume)
        log.info("resuming from %s (step %d of %d)", resume.path.name, position.step, run.n_steps)
    wall_before = position.wall_seconds
    metrics = MetricsLog(run_dir / "metrics.jsonl" if world.is_main else None,
                         keep_up_to_step=position.step if resume else None)
    # Stop signals stay flags until the outputs are written: a signal during the final evaluation or
    # the weights' save must not kill the run half way through its files.
    with StopRequest() as stop:
        try:
            final = training_loop(run, position, metrics, stop, lambda: wall_before + time.perf_counter() - start)
        except Diverged as err:
            result.update(status="diverged", error=str(err), diverged_at_step=err.step,
                          wall_seconds=wall_before + time.perf_counter() - start)
            save.result(result)
            return result
        except SystemExit:
            result.update(status="interrupted", wall_seconds=wall_before + time.perf_counter() - start)
            save.result(result)
            raise
        finally:
            metrics.close()
        wall = wall_before + time.perf_counter() - start
        result.update(final, status="completed", wall_seconds=wall, error=None, diverged_at_step=None)
        result["init_param_sha256"] = run.init_param_sha256
        if world.is_main:
            finish_outputs(run, result, plain)
            ckpt.remove_checkpoints(run_dir)
        barrier(world)
    return result


def precision_warnings(cfg: GptxConfig, device: torch.device) -> list[str]:
    """Say so when a precision choice cannot change anything on this device (a CPU computes in fp32)."""
    if device.type == "cuda":
        return []
    if "fp32" in cfg.intervention:
        return ["intervention fp32 is a no-op on a CPU: gptx computes in float32 there anyway, so this arm "
                "repeats the baseline; measure it on a GPU"]
    return []


@dataclass
class LoopPosition:
    """Where the loop stands: the step, and what the current logging interval has summed so far."""

    step: int = 0
    wall_seconds: float = 0.0
    interval_loss: float = 0.0
    interval_steps: int = 0


class _MainRankWriter:
    """Writes result.json from rank 0 only."""

    def __init__(self, world: World, run_dir: Path):
        self.world, self.path = world, run_dir / RESULT_FILE

    def result(self, result: dict[str, Any]) -> None:
        if self.world.is_main:
            write_json(self.path, result)


def resume_from(run: Run, resume: ckpt.Checkpoint) -> LoopPosition:
    """Restore weights, optimizer, scaler and this rank's RNG streams; returns where the loop stood."""
    if resume.state.init_weights_sha256 != run.init_weights_sha256:
        raise ckpt.CheckpointError(f"{resume.path} was written by a run with other initial weights")
    if resume.state.world_size != run.world.size:
        raise ckpt.CheckpointError(f"{resume.path} was written by {resume.state.world_size} processes, "
                                   f"this run has {run.world.size}: bit-exact resume needs the same number")
    rng = ckpt.restore(resume, run.model, run.optimizer)
    prefix = f"rank{run.world.rank}."
    restore_rng_state({k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)})
    if resume.state.scaler:
        run.scaler.load_state_dict(resume.state.scaler)
    state = resume.state
    return LoopPosition(state.step, state.wall_seconds, state.interval_loss, state.interval_steps)


def build_run(cfg: GptxConfig, run_dir: Path, world: World | None = None) -> Run:
    """Device, data, seeds, model and optimizer, in the order that fixes the run's random streams."""
    world = world or World()
    per_rank = cfg.train.batch_size // world.size
    micro_batch = cfg.train.micro_batch_size or per_rank  # null: each process's whole share at once
    if cfg.train.batch_size % world.size or per_rank % micro_batch:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must split into {world.size} processes "
                          f"x whole micro-batches of train.micro_batch_size={micro_batch}")
    configure_determinism(cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train, device)
    seq_len = cfg.train.seq_len or cfg.model.context_length
    data = load_data(cfg.data, seq_len, cfg.model.vocab_size)
    seed_everything(cfg.init_seed)
    model = build_model(cfg.model, cfg.init_seed)
    init_sha, init_params = weights_sha256(model), parameter_sha256s(model)
    if cfg.train_seed is not None:
        seed_everything(cfg.train_seed)
    if world.rank > 0:  # distinct dropout masks per rank; rank 0 keeps the single-process stream
        seed_everything(rank_seed(cfg.init_seed if cfg.train_seed is None else cfg.train_seed, world.rank))
    model.to(device)
    forward = model
    if world.distributed:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        forward = torch.compile(forward)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                                  weight_decay=t.weight_decay, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    n_steps = total_steps(t, t.batch_size * seq_len)
    return Run(cfg, run_dir, world, device, precision, data, model, forward, optimizer, scaler, n_steps,
               seq_len, micro_batch, init_sha, init_params)


def training_loop(run: Run, position: LoopPosition, metrics: MetricsLog, stop: StopRequest,
                  wall: Callable[[], float]) -> dict[str, Any]:
    """Optimizer steps from `position` to the end; returns the final losses and throughput."""
    cfg, t, model, opt, world = run.cfg, run.cfg.train, run.model, run.optimizer, run.world
    order = TrainOrder(run.data.train.n_sequences, t.batch_size, cfg.data_seed)
    tokens_per_step = t.batch_size * run.seq_len
    per_token, peak = flops_per_token(model, run.seq_len), run_peak_flops(run)
    per_rank = t.batch_size // world.size
    micro_batch = run.micro_batch
    n_micro = per_rank // micro_batch
    step, interval_loss, interval_steps = position.step, position.interval_loss, position.interval_steps
    progress = Progress(run.n_steps, step, enabled=world.is_main)
    interval_start, saved_at = time.perf_counter(), None
    val_loss = train_loss = None
    model.train()
    while step < run.n_steps:
        maybe_fire("step", step + 1)
        if all_agree(world, stop.requested):
            if saved_at != step:  # a periodic checkpoint of this very step is already on disk
                save_checkpoint(run, LoopPosition(step, wall(), interval_loss, interval_steps))
            log.info("stop signal %s: checkpointed at step %d", stop.signum, step)
            stop.hand_over()
        lr = lr_at(step, run.n_steps, t)
        for group in opt.param_groups:
            group["lr"] = lr
        indices = order.step_indices(step)[world.rank * per_rank : (world.rank + 1) * per_rank]
        x_all, y_all = run.data.train.sequences(indices)
        if run.device.type == "cuda":  # pinned pages let the copies below run asynchronously
            x_all, y_all = x_all.pin_memory(), y_all.pin_memory()
        loss_sum = torch.zeros((), device=run.device)
        for micro in range(n_micro):
            rows = slice(micro * micro_batch, (micro + 1) * micro_batch)
            x = x_all[rows].to(run.device, non_blocking=True)
            y = y_all[rows].to(run.device, non_blocking=True)
            # Gradients are averaged across ranks once, on the last micro-batch.
            sync = not world.distributed or micro == n_micro - 1
            with run.precision.autocast(run.device), (contextlib.nullcontext() if sync else run.forward.no_sync()):
                loss = lm_loss(run.forward(x), y) / n_micro
                if t.fail_at_step == step + 1:
                    loss = loss * float("nan")
                run.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        # The one host sync a step: the finite check needs it (and every rank must agree on it).
        step_loss = float(mean_over_ranks(world, loss_sum))
        if step_loss != step_loss or step_loss in (float("inf"), float("-inf")):
            raise Diverged(step + 1, step_loss)
        run.scaler.unscale_(opt)
        log_now = (step + 1) % t.log_every == 0 or step + 1 == run.n_steps
        grad_norm = None
        if t.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        elif log_now:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        run.scaler.step(opt)
        run.scaler.update()
        opt.zero_grad(set_to_none=True)
        step += 1
        interval_loss, interval_steps = interval_loss + step_loss, interval_steps + 1
        progress.update(step, step_loss)
        evaluate_now = step % t.eval_every == 0 or step == run.n_steps
        if evaluate_now and world.is_main:
            maybe_fire("eval", step)
            val_loss = split_loss(model, run.data.val, t.eval_batches * micro_batch, micro_batch,
                                  run.device, run.precision)
        if log_now:
            elapsed = time.perf_counter() - interval_start
            train_loss = interval_loss / interval_steps
            tokens_per_second = interval_steps * tokens_per_step / max(elapsed, 1e-9)
            record = {"step": step, "tokens": step * tokens_per_step, "train_loss": train_loss, "lr": lr,
                      "grad_norm": None if grad_norm is None else float(grad_norm),
                      "tokens_per_second": tokens_per_second,
                      "mfu": mfu(tokens_per_second / world.size, per_token, peak)}
            if evaluate_now:
                record["val_loss"] = val_loss
            metrics.write(record)
            progress.log(record)
            interval_loss, interval_steps, interval_start = 0.0, 0, time.perf_counter()
        elif evaluate_now:
            metrics.write({"step": step, "tokens": step * tokens_per_step, "val_loss": val_loss})
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < run.n_steps:
            save_checkpoint(run, LoopPosition(step, wall(), interval_loss, interval_steps))
            saved_at = step
            maybe_fire("checkpoint", step)
    progress.close()
    return {"steps": step, "tokens": step * tokens_per_step, "train_loss": train_loss, "val_loss": val_loss}


def run_peak_flops(run: Run) -> float | None:
    """Peak FLOP/s of one of the run's GPUs in the precision its matmuls use (None on CPU: no MFU)."""
    return peak_flops(run.device, run.precision.autocast_dtype or torch.float32, tf32=run.cfg.train.tf32)


def save_checkpoint(run: Run, position: LoopPosition) -> None:
    """Checkpoint the run at a step boundary, with every rank's RNG streams, written by rank 0."""
    rng_by_rank = gather_objects(run.world, capture_rng_state())
    if run.world.is_main:
        rng = {f"rank{r}.{k}": v for r, states in enumerate(rng_by_rank) for k, v in states.items()}
        state = ckpt.TrainingState(position.step, position.wall_seconds, config_sha256(to_plain_dict(run.cfg)),
                                   run.init_weights_sha256,
                                   run.scaler.state_dict() if run.scaler.is_enabled() else None,
                                   run.world.size, position.interval_loss, position.interval_steps)
        ckpt.save_checkpoint(run.run_dir, run.model, run.optimizer, rng, state)
    barrier(run.world)


def finish_outputs(run: Run, result: dict[str, Any], plain: dict[str, Any]) -> None:
    """Test loss, throughput, sample and weights, then result.json last (its presence means done)."""
    t = run.cfg.train
    result["test_loss"] = split_loss(run.model, run.data.test, run.cfg.data.test_sequences, run.micro_batch,
                                     run.device, run.precision)
    result["test_tokens"] = (min(run.cfg.data.test_sequences or run.data.test.n_sequences,
                                 run.data.test.n_sequences) * run.seq_len)
    result["tokens_per_second"] = result["tokens"] / max(result["wall_seconds"], 1e-9)
    result["flops_per_token"] = flops_per_token(run.model, run.seq_len)
    result["peak_flops"] = run_peak_flops(run)  # per GPU; tokens_per_second is all ranks together
    result["mfu"] = mfu(result["tokens_per_second"] / run.world.size, result["flops_per_token"],
                        result["peak_flops"])
    result["final_weights_sha256"] = weights_sha256(run.model)
    sample = greedy_sample(run.model, run.device, t.sample_tokens, tokenizer_for(run.cfg.data))
    write_atomic(run.run_dir / SAMPLE_FILE, (sample + "\n").encode())
    metadata = {"gptx_config": OmegaConf.to_yaml(plain), "gptx_result_sha256": result["final_weights_sha256"]}
    save_weights(run.model, run.run_dir / MODEL_FILE, metadata)
    write_json(run.run_dir / RESULT_FILE, result)
    log.info("test_loss %.6f  (%s, %d steps, %.1f s)", result["test_loss"], "+".join(result["intervention"]),
             result["steps"], result["wall_seconds"])


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """Write .hydra/{config,hydra,overrides}.yaml ourselves, only for runs that actually run.

    Hydra would rewrite them on every launch, touching completed runs that a relaunch skips.
    """
    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg).encode())
    write_atomic(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}).encode())
    write_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(list(hydra_cfg.overrides.task)).encode())


register_schema()
register_resolvers()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    """Hydra entry: validate, train, and turn the outcome into an exit status."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    main_rank = int(os.environ.get("RANK", "0")) == 0
    previous = read_result(run_dir)
    finished = bool(previous and previous.get("status") == "completed")
    try:
        typed = from_dictconfig(cfg)
        if main_rank and not (finished and not typed.overwrite):
            save_hydra_files(run_dir, cfg)
        result = train(typed, run_dir)
    except (ConfigError, ckpt.CheckpointError) as err:
        print(f"gptx: error: {err}", file=sys.stderr)
        if not multirun:
            raise SystemExit(2) from None
        # In a sweep, one job's bad value must not stop the others: record it and let Hydra go on.
        if main_rank and not finished:
            save_hydra_files(run_dir, cfg)
            write_json(run_dir / RESULT_FILE, {**(previous or {}), "status": "failed", "error": str(err)})
        raise
    except Exception as err:
        if main_rank and not finished:
            failed = {**(read_result(run_dir) or {}), "status": "failed",
                      "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            write_json(run_dir / RESULT_FILE, failed)
        log.error("run failed: %s: %s", type(err).__name__, err)
        raise
    if result.get("skipped"):
        print(f"gptx: skipped {run_dir}: already completed with the same config")
    elif result["status"] != "completed":
        log.error("run %s: %s", result["status"], result.get("error"))
        if not multirun:
            raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()

"""The training loop: everything a run builds before its first step, then one `train_step` after another.

`build_training` makes the device, data, seeds, model and optimizer in the order that fixes the run's
random streams; `training_loop` steps from where the run stands to its end, evaluating, logging
metrics and checkpointing on the way; `train_step` is one optimizer step. Free of Hydra and of
result.json: the run folder's lifecycle around the loop is gptx.run's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from gptx import checkpoint as ckpt
from gptx import components
from gptx.attention_backend import pin_attention_backends
from gptx.checkpoint import LoopPosition
from gptx.config import ConfigError, GptxConfig, config_sha256, to_plain_dict
from gptx.data import TokenData, TrainOrder, load_data
from gptx.distributed import World, barrier, gather_objects, mean_and_any, rank_seed
from gptx.faults import maybe_fire, nan_loss_at
from gptx.files import MetricsLog
from gptx.hardware import device_memory, mfu, peak_flops, resolve_device
from gptx.hashing import named_tensors, parameter_sha256s, weights_sha256
from gptx.model import GPTModel, build_model, check_fits, flops_per_token
from gptx.precision import Precision, resolve_precision
from gptx.progress import Progress
from gptx.schedule import lr_at, total_steps
from gptx.scoring import split_loss
from gptx.seeding import (
    capture_rng_state,
    configure_determinism,
    required_rng_keys,
    restore_rng_state,
    seed_everything,
)
from gptx.signals import StopRequest

log = logging.getLogger("gptx.train")


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the step's update was not applied."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"non-finite loss {loss} at step {step}")
        self.step = step


@dataclass
class Training:
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


def build_training(cfg: GptxConfig, run_dir: Path, world: World | None = None) -> Training:
    """Device, data, seeds, model and optimizer, in the order that fixes the run's random streams."""
    world = world or World()
    per_rank = cfg.train.batch_size // world.size
    micro_batch = cfg.train.micro_batch_size or per_rank  # null: each process's whole share at once
    if cfg.train.batch_size % world.size or per_rank % micro_batch:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must split into {world.size} processes "
                          f"x whole micro-batches of train.micro_batch_size={micro_batch}")
    configure_determinism(cfg.train.deterministic)
    pin_attention_backends(cfg.model.dropout)
    device = resolve_device(cfg.train.device)
    # float32 weights, gradients and two AdamW moments: 16 bytes a parameter before any activation
    check_fits(cfg.model, device_memory(device), 16, "its weights, gradients and AdamW moments")
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
    optimizer = components.load("optimizer", t.optimizer)(model, t)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    n_steps = total_steps(t, t.batch_size * seq_len)
    return Training(cfg, run_dir, world, device, precision, data, model, forward, optimizer, scaler, n_steps,
                    seq_len, micro_batch, init_sha, init_params)


def check_resumable(tr: Training, checkpoint: ckpt.Checkpoint) -> None:
    """Raise ValueError unless a checkpoint fits this run's plan: its step within the planned steps, every
    model tensor with its shape and dtype, the optimizer's groups and moments, this rank's RNG streams."""
    state, tensors = checkpoint.state, checkpoint.tensors
    if state.step > tr.n_steps:
        raise ValueError(f"step {state.step} is past this run's {tr.n_steps} planned steps")
    for name, tensor in named_tensors(tr.model).items():
        saved = tensors.get(f"model.{name}")
        if saved is None or saved.shape != tensor.shape or saved.dtype != tensor.dtype:
            raise ValueError(f"model.{name} is missing or has another shape or dtype than the model's")
    groups, saved_groups = tr.optimizer.param_groups, checkpoint.optimizer_param_groups
    expected, n_params = [], 0  # optimizer.state_dict() numbers the parameters group after group
    for group in groups:
        expected.append(list(range(n_params, n_params + len(group["params"]))))
        n_params += len(group["params"])
    if [g.get("params") for g in saved_groups] != expected:
        raise ValueError(f"its optimizer_param_groups do not match this run's {len(groups)} groups")
    for group, saved in zip(groups, saved_groups, strict=True):
        if set(saved) != set(group):
            raise ValueError("its optimizer_param_groups have other settings than this run's optimizer")
    for key in tensors:
        if key.startswith("optim.") and not (key.count(".") >= 2 and key.split(".")[1].isdigit()
                                             and int(key.split(".")[1]) < n_params):
            raise ValueError(f"{key} names no parameter of this run's optimizer")
    prefix = f"rng.rank{tr.world.rank}."
    saved = {key[len(prefix):]: None for key in tensors if key.startswith(prefix)}
    missing = [key for key in required_rng_keys(saved, tr.device) if prefix + key not in tensors]
    if missing:
        raise ValueError(f"checkpoint RNG state lacks {missing}: cannot resume bit-exactly")


def resume_from(tr: Training, resume: ckpt.Checkpoint) -> LoopPosition:
    """Restore weights, optimizer, scaler and this rank's RNG streams; returns where the loop stood."""
    if resume.state.init_weights_sha256 != tr.init_weights_sha256:
        raise ckpt.CheckpointError(f"{resume.path} was written by a run with other initial weights")
    if resume.state.world_size != tr.world.size:
        raise ckpt.CheckpointError(f"{resume.path} was written by {resume.state.world_size} processes, "
                                   f"this run has {tr.world.size}: bit-exact resume needs the same number")
    rng = ckpt.restore(resume, tr.model, tr.optimizer)
    prefix = f"rank{tr.world.rank}."
    restore_rng_state({k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}, tr.device)
    if resume.state.scaler:
        tr.scaler.load_state_dict(resume.state.scaler)
    return resume.state.position


def train_step(tr: Training, step: int, indices: Any, lr: float, need_norm: bool,
               flags: StepFlags) -> tuple[float, torch.Tensor | None]:
    """Optimizer step number `step` on this rank's sequences `indices`: forward, backward, clip, update.

    Returns the step's loss (mean over ranks; its reduction carries `flags` to the other ranks) and the
    pre-clip gradient norm (None when neither clipping nor `need_norm` asks for it). Raises Diverged,
    before the update, on a non-finite loss.
    """
    t, opt, world = tr.cfg.train, tr.optimizer, tr.world
    for group in opt.param_groups:
        group["lr"] = lr
    x_all, y_all = tr.data.train.sequences(indices)
    if tr.device.type == "cuda":  # pinned pages let the copies below run asynchronously
        x_all, y_all = x_all.pin_memory(), y_all.pin_memory()
    n_micro = len(indices) // tr.micro_batch
    poison = nan_loss_at(step)  # fault injection (GPTX_FAULT=nan@STEP); off in real runs
    loss_sum = torch.zeros((), device=tr.device)
    for micro in range(n_micro):
        rows = slice(micro * tr.micro_batch, (micro + 1) * tr.micro_batch)
        x = x_all[rows].to(tr.device, non_blocking=True)
        y = y_all[rows].to(tr.device, non_blocking=True)
        # Gradients are averaged across ranks once, on the last micro-batch.
        sync = not world.distributed or micro == n_micro - 1
        with tr.precision.autocast(tr.device), (contextlib.nullcontext() if sync else tr.forward.no_sync()):
            loss = tr.forward(x, y) / n_micro  # the sliced head + loss: no [tokens, vocab] logits
            if poison:
                loss = loss * float("nan")
            tr.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    # The one host sync a step: the finite check needs it (and every rank must agree on it).
    step_loss = flags.exchange(loss_sum)
    if step_loss != step_loss or step_loss in (float("inf"), float("-inf")):
        raise Diverged(step, step_loss)
    tr.scaler.unscale_(opt)
    grad_norm = None
    if t.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), t.grad_clip)
    elif need_norm:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in tr.model.parameters() if p.grad is not None])
    tr.scaler.step(opt)
    tr.scaler.update()
    opt.zero_grad(set_to_none=True)
    return step_loss, grad_norm


class StepFlags:
    """Whether to stop or checkpoint at the top of a step, as every rank agrees: true on all ranks when true
    on any (a stop signal may reach one rank; the checkpoint clock is rank 0's).

    One process reads its own flags at the top of each step. A distributed run sends them with the step's
    loss, in the collective each step makes anyway, and acts on them at the top of the next step: a second
    collective would be a second host sync a step on GPUs. A signal is then acted on one step later.
    """

    def __init__(self, world: World, stop: StopRequest, clock: CheckpointClock):
        self.world, self.stop, self.clock = world, stop, clock
        self.carried: tuple[bool, ...] = (False, False)  # what the ranks agreed with the last step's loss

    def _own(self) -> tuple[bool, bool]:
        return self.stop.requested, self.clock.due()

    def agreed(self) -> tuple[bool, ...]:
        """(stop now, checkpoint clock due), the same on every rank."""
        return self.carried if self.world.distributed else self._own()

    def exchange(self, loss_sum: torch.Tensor) -> float:
        """The step's loss, averaged over ranks, with this rank's flags sent alongside."""
        if not self.world.distributed:
            return float(loss_sum)
        loss, self.carried = mean_and_any(self.world, loss_sum, self._own())
        return loss


class ClipCounter:
    """How often clipping was active and the largest pre-clip norm, summed on the device (no host sync)."""

    def __init__(self, position: LoopPosition, device: torch.device):
        self.active = torch.tensor(position.grad_clip_active_steps, dtype=torch.int64, device=device)
        self.norm_max = torch.tensor(position.grad_norm_max, dtype=torch.float32, device=device)

    def add(self, grad_norm: torch.Tensor, clip: float) -> None:
        """Count one step's pre-clip norm."""
        self.active += grad_norm > clip
        self.norm_max = torch.maximum(self.norm_max, grad_norm.float())

    def totals(self) -> tuple[int, float]:
        """(active steps, largest norm) on the host: a sync, so only when logging or checkpointing."""
        return int(self.active), float(self.norm_max)


class MetricsLine:
    """The metrics log's cadence: a line every train.log_every steps and at the last, its train loss the mean
    over the steps since the line before (an interval a checkpoint carries across a resume)."""

    def __init__(self, tr: Training, position: LoopPosition, metrics: MetricsLog, progress: Progress):
        self.tr, self.metrics, self.progress = tr, metrics, progress
        self.interval_loss, self.interval_steps = position.interval_loss, position.interval_steps
        self.train_loss = position.train_loss
        self.tokens_per_step = tr.cfg.train.batch_size * tr.seq_len
        self.per_token, self.peak = flops_per_token(tr.model, tr.seq_len), training_peak_flops(tr)
        self.start = time.perf_counter()

    def due(self, step: int) -> bool:
        """Whether step `step` (from 1) ends with a line: its gradient norm is then worth a host sync."""
        return step % self.tr.cfg.train.log_every == 0 or step == self.tr.n_steps

    def add(self, step_loss: float) -> None:
        """One more step in the interval."""
        self.interval_loss, self.interval_steps = self.interval_loss + step_loss, self.interval_steps + 1

    def write(self, step: int, lr: float, grad_norm: torch.Tensor | None, clipping: ClipCounter | None,
              val_loss: float | None) -> None:
        """The line of step `step` (with val_loss when the step evaluated), then a new interval."""
        elapsed = time.perf_counter() - self.start
        self.train_loss = self.interval_loss / self.interval_steps
        tokens_per_second = self.interval_steps * self.tokens_per_step / max(elapsed, 1e-9)
        record = {"step": step, "tokens": step * self.tokens_per_step, "train_loss": self.train_loss, "lr": lr,
                  "grad_norm": None if grad_norm is None else float(grad_norm),
                  "tokens_per_second": tokens_per_second,
                  "mfu": mfu(tokens_per_second / self.tr.world.size, self.per_token, self.peak)}
        if clipping:
            record["grad_clip_active_steps"] = clipping.totals()[0]
        if val_loss is not None:
            record["val_loss"] = val_loss
        self.metrics.write(record)
        self.progress.log(record)
        self.interval_loss, self.interval_steps, self.start = 0.0, 0, time.perf_counter()

    def write_val(self, step: int, val_loss: float) -> None:
        """A validation loss at a step without a line of its own."""
        self.metrics.write({"step": step, "tokens": step * self.tokens_per_step, "val_loss": val_loss})


class Checkpoints:
    """When the loop checkpoints: every train.checkpoint_every steps (the last aside), when rank 0's
    train.checkpoint_minutes clock says so, at a stop signal, and after the last step when either is set
    (a crash or a kill in the final evaluation and outputs then reruns only them); never twice at one step."""

    def __init__(self, tr: Training, step: int):
        t = tr.cfg.train
        self.tr, self.every, self.at_end = tr, t.checkpoint_every, bool(t.checkpoint_every or t.checkpoint_minutes)
        self.saved_at = step or None  # a resumed run's own checkpoint is on disk
        self.clock = CheckpointClock(t.checkpoint_minutes, tr.world.is_main)

    def every_due(self, step: int) -> bool:
        """Whether step `step` is one of train.checkpoint_every's."""
        return bool(self.every) and step % self.every == 0 and step < self.tr.n_steps

    def save(self, position: LoopPosition) -> None:
        """Checkpoint the run where it stands, unless this very step is already on disk."""
        if self.saved_at != position.step:
            save_checkpoint(self.tr, position)
            self.saved_at = position.step
            self.clock.restart()
            maybe_fire("checkpoint", position.step)


def training_loop(tr: Training, position: LoopPosition, metrics: MetricsLog, stop: StopRequest,
                  wall: Callable[[], float]) -> dict[str, Any]:
    """Optimizer steps from `position` to the end; returns the final losses, throughput and clipping counts."""
    cfg, t, world = tr.cfg, tr.cfg.train, tr.world
    order = TrainOrder(tr.data.train.n_sequences, t.batch_size, cfg.data_seed, cfg.data.order)
    per_rank = t.batch_size // world.size
    step, val_loss = position.step, position.val_loss
    clipping = ClipCounter(position, tr.device) if t.grad_clip is not None else None
    progress = Progress(tr.n_steps, step, enabled=world.is_main)
    line, checkpoints = MetricsLine(tr, position, metrics, progress), Checkpoints(tr, step)
    flags = StepFlags(world, stop, checkpoints.clock)

    def here() -> LoopPosition:
        clip_totals = clipping.totals() if clipping else (0, 0.0)
        return LoopPosition(step, wall(), line.interval_loss, line.interval_steps, *clip_totals, line.train_loss,
                            val_loss)

    tr.model.train()
    while step < tr.n_steps:
        maybe_fire("step", step + 1)
        stop_now, time_due = flags.agreed()
        if stop_now:
            checkpoints.save(here())
            log.info("stop signal %s: checkpointed at step %d", stop.signum, step)
            stop.hand_over()
        if time_due:
            checkpoints.save(here())
        lr, log_now = lr_at(step, tr.n_steps, t), line.due(step + 1)
        indices = order.step_indices(step)[world.rank * per_rank : (world.rank + 1) * per_rank]
        step_loss, grad_norm = train_step(tr, step + 1, indices, lr, log_now, flags)
        if clipping:
            clipping.add(grad_norm, t.grad_clip)
        step += 1
        line.add(step_loss)
        progress.update(step, step_loss)
        evaluate_now = step % t.eval_every == 0 or step == tr.n_steps
        if evaluate_now:  # every rank evaluates its share of the batches
            if world.is_main:
                maybe_fire("eval", step)
            val_loss = split_loss(tr.model, tr.data.val, t.eval_batches * tr.micro_batch, tr.micro_batch,
                                  tr.device, tr.precision, world)
        if log_now:
            line.write(step, lr, grad_norm, clipping, val_loss if evaluate_now else None)
        elif evaluate_now:
            line.write_val(step, val_loss)
        if checkpoints.every_due(step):
            checkpoints.save(here())
    if checkpoints.at_end:
        checkpoints.save(here())
    progress.close()
    active, norm_max = clipping.totals() if clipping else (None, None)
    return {"steps": step, "tokens": step * line.tokens_per_step, "train_loss": line.train_loss, "val_loss": val_loss,
            "grad_clip_active_steps": active, "grad_norm_max": norm_max}


class CheckpointClock:
    """Whether train.checkpoint_minutes have passed since the last checkpoint, by rank 0's clock only.

    The other ranks answer False and follow rank 0 through the loop's one collective, so every rank
    checkpoints at the same step; when is a matter of timing, but a checkpoint never changes the bits.
    """

    def __init__(self, minutes: float | None, is_main: bool):
        self.seconds = None if minutes is None or not is_main else minutes * 60.0
        self.restart()

    def restart(self) -> None:
        """Count from now (a checkpoint was just written, or the loop starts)."""
        self.since = time.monotonic()

    def due(self) -> bool:
        """True once the interval has passed (always False on ranks other than 0)."""
        return self.seconds is not None and time.monotonic() - self.since >= self.seconds


def training_peak_flops(tr: Training) -> float | None:
    """Peak FLOP/s of one of the run's GPUs in the precision its matmuls use (None on CPU: no MFU)."""
    return peak_flops(tr.device, tr.precision.autocast_dtype or torch.float32, tf32=tr.cfg.train.tf32)


def save_checkpoint(tr: Training, position: LoopPosition) -> None:
    """Checkpoint the run at a step boundary, with every rank's RNG streams, written by rank 0."""
    rng_by_rank = gather_objects(tr.world, capture_rng_state(tr.device))
    if tr.world.is_main:
        rng = {f"rank{r}.{k}": v for r, states in enumerate(rng_by_rank) for k, v in states.items()}
        state = ckpt.TrainingState(position, config_sha256(to_plain_dict(tr.cfg)), tr.init_weights_sha256,
                                   tr.scaler.state_dict() if tr.scaler.is_enabled() else None, tr.world.size)
        ckpt.save_checkpoint(tr.run_dir, tr.model, tr.optimizer, rng, state)
    barrier(tr.world)

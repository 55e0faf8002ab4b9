"""One run in its folder, free of Hydra: `train(cfg, run_dir)` trains, resumes or skips it.

The run folder's lifecycle: a completed run of the same config is skipped untouched, another
config's completed run is refused (unless overwrite=true), an interrupted one resumes from its newest
valid checkpoint. Around the loop (gptx.loop) come the final outputs — test loss and per-sequence test
losses, sample, weights — and result.json, last. This module is the only writer of result.json, and it
reads it once, when the run starts.
"""

from __future__ import annotations

import io
import logging
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from gptx import checkpoint as ckpt
from gptx import components, config
from gptx.allocator import keep_freed_memory
from gptx.attention_backend import sdpa_backend
from gptx.config import ConfigError, GptxConfig, arm_settings, config_sha256, to_plain_dict
from gptx.data import data_sha256
from gptx.distributed import World, barrier, broadcast_object, init_world, is_main_process, shutdown
from gptx.faults import maybe_fire
from gptx.files import (
    LOCK_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RESULT_FILE,
    SAMPLE_FILE,
    TEST_LOSSES_FILE,
    MetricsLog,
    file_sha256,
    write_atomic,
    write_json,
)
from gptx.folders import FolderRefused, check_run_folder, lock_run_folder, mark_run_folder
from gptx.hardware import environment, mfu, resolve_device
from gptx.hashing import weights_sha256
from gptx.loop import (
    Diverged,
    LoopPosition,
    Training,
    build_training,
    check_resumable,
    resume_from,
    training_loop,
    training_peak_flops,
)
from gptx.model import count_parameters, flops_per_token
from gptx.result import RunResult, Status, completed_with, read_result
from gptx.scoring import greedy_sample, split_losses
from gptx.seeding import configure_determinism
from gptx.signals import StopRequest
from gptx.tokenizer import tokenizer_for
from gptx.trackers import Tracker, identity, open_tracker
from gptx.weights import RECORDED_SHA_KEY, save_weights

log = logging.getLogger("gptx.train")

BeforeStart = Callable[[], None]


class RunFolder:
    """A run's folder: what result.json said when the run started, and the writes to it (main rank only)."""

    def __init__(self, path: Path, is_main: bool = True, before_start: BeforeStart | None = None):
        self.path, self.is_main = path, is_main
        self.previous = read_result(path)  # what the folder held when the run started
        self.current: RunResult | None = None  # what this process last wrote
        self._before_start = before_start

    def start(self) -> None:
        """The run is going to write here: mark the folder as gptx's, then call `before_start` (main rank, once)."""
        if self.is_main:
            mark_run_folder(self.path)
        if self._before_start is not None and self.is_main:
            self._before_start()
        self._before_start = None

    def holds_completed(self) -> bool:
        """Whether result.json (as last read or written) says the run completed."""
        state = self.current if self.current is not None else self.previous
        return bool(state and state.completed)

    def write(self, result: RunResult) -> None:
        """Replace result.json (rank 0 only)."""
        self.current = result.copy()
        if self.is_main:
            write_json(self.path / RESULT_FILE, result.to_json())

    def fail(self, error: str, trace: str | None = None) -> None:
        """Record `failed` with the error, keeping what the run recorded; a completed run is left alone."""
        if not self.is_main or self.holds_completed():
            return
        result = (self.current or self.previous or RunResult()).copy()
        result.update(status=Status.FAILED, error=error)
        if trace is not None:
            result.traceback = trace
        try:
            self.start()
            self.write(result)
        except OSError as err:  # a full disk may refuse this too; the error itself still reaches the user
            log.warning("could not record the failure in %s: %s", RESULT_FILE, err)


# Errors a user can act on: one line, no traceback; recorded in result.json only in a sweep (record_errors),
# never for a folder gptx refused (it writes nothing there).
USER_ERRORS = (ConfigError, ckpt.CheckpointError, FolderRefused)


def record_failure(run_dir: Path, error: Exception, before_start: BeforeStart | None = None) -> None:
    """A run that could not start (say, its config is invalid): failed result.json, for the sweep's table."""
    if is_main_process():
        RunFolder(run_dir, before_start=before_start).fail(*_describe(error))


def _packaged_settings(cfg: GptxConfig) -> dict[str, dict[str, Any]]:
    """What each of the run's interventions sets, from gptx's own files (those it has)."""
    found = {}
    for name in cfg.intervention:
        try:
            found[name] = config.intervention_settings(name)
        except ConfigError:
            continue
    return found


def _describe(error: Exception) -> tuple[str, str | None]:
    """The error line for result.json, and the traceback unless it is a user error."""
    if isinstance(error, USER_ERRORS):
        return str(error), None
    return f"{type(error).__name__}: {error}", traceback.format_exc()


def train(cfg: GptxConfig, run_dir: Path, before_start: BeforeStart | None = None,
          record_errors: bool = False, intervention_settings: dict[str, dict[str, Any]] | None = None,
          sweep_dir: Path | None = None, launch_files: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train (or resume, or skip if already completed) one run in run_dir; returns its result.

    The main rank first checks that run_dir is gptx's (and, in a sweep, `sweep_dir`'s; `launch_files`:
    what this launch already wrote there) and holds its lock until the run ends; a refused folder
    (FolderRefused) is left exactly as it was. `before_start` runs on the main rank once the run is known
    to run (the Hydra entry writes `.hydra/` then). A crash is recorded as `failed`; with `record_errors`
    (a sweep) a user error is too. `intervention_settings` (what each applied intervention sets) goes into
    result.json, so the analysis can tell an intervention's own keys from other differences between arms;
    None reads gptx's own files.
    """
    lock = None
    if is_main_process():  # under torchrun a refusal on rank 0 ends the other ranks too
        check_run_folder(run_dir, sweep_dir, launch_files)
        lock = lock_run_folder(run_dir)
        check_run_folder(run_dir, sweep_dir, launch_files)  # again under the lock: another process may have written
    try:
        return _train_in_world(cfg, run_dir, before_start, record_errors, intervention_settings)
    finally:
        if lock is not None:
            lock.release()


def _train_in_world(cfg: GptxConfig, run_dir: Path, before_start: BeforeStart | None, record_errors: bool,
                    intervention_settings: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    try:
        # Before the process group: PyTorch keeps NCCL off its nondeterministic (NVLS) all-reduce only
        # when deterministic algorithms are on before NCCL starts.
        configure_determinism(cfg.train.deterministic)
        world = init_world(resolve_device(cfg.train.device).type == "cuda")
    except Exception as err:
        if record_errors or not isinstance(err, USER_ERRORS):
            record_failure(run_dir, err, before_start)
        raise
    try:
        # Every rank uses rank 0's folder (Hydra may have named one per process start time).
        run_dir = Path(broadcast_object(world, str(run_dir)))  # type: ignore[arg-type]
        folder = RunFolder(run_dir, world.is_main, before_start)
        try:
            return _train(cfg, folder, world, intervention_settings)
        except Exception as err:
            if record_errors or not isinstance(err, USER_ERRORS):
                folder.fail(*_describe(err))
            raise
    finally:
        shutdown(world)


def _train(cfg: GptxConfig, folder: RunFolder, world: World,
           intervention_settings: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    if not world.is_main:  # rank 0 speaks for the run; the others only warn
        logging.getLogger("gptx").setLevel(logging.WARNING)
    run_dir, previous = folder.path, folder.previous
    plain = to_plain_dict(cfg)
    cfg_sha = config_sha256(plain)
    damaged = False
    if folder.holds_completed() and not cfg.overwrite:
        if previous.config_sha256 != cfg_sha:  # type: ignore[union-attr]
            raise ConfigError(f"{run_dir} holds a completed run of another config; choose another folder, or pass "
                              "overwrite=true to replace it")
        done, why = completed_with(run_dir, previous, lambda record: record.config_sha256 == cfg_sha)
        if done:
            return {**previous.to_json(), "skipped": True}  # type: ignore[union-attr]
        # The run is deterministic: training it again gives back the weights it recorded.
        log.warning("%s completed, but %s: training the run again", run_dir, why)
        damaged = True
    # overwrite=true replaces a finished run or another config's folder, never a run resuming its own.
    replacing = damaged or cfg.overwrite and previous is not None and (previous.completed
                                                                       or previous.config_sha256 != cfg_sha)
    base = RunResult(status=Status.RUNNING, intervention=cfg.intervention_names, arm=cfg.arm,
                     init_seed=cfg.init_seed, train_seed=cfg.train_seed, data_seed=cfg.data_seed,
                     replica=cfg.replica, model=cfg.model.name, data=cfg.data.name, config_sha256=cfg_sha,
                     world_size=world.size, arm_settings=arm_settings(plain),
                     intervention_settings=intervention_settings if intervention_settings is not None
                     else _packaged_settings(cfg),
                     # who provides each component, at which version, and the sha256 of its source (gptx.reproduce)
                     components=components.used(cfg.model, cfg.train))
    start = time.perf_counter()
    allocator = keep_freed_memory()  # before the data and the model take their memory
    tr = build_training(cfg, run_dir, world)
    resume = None
    if not replacing:  # the newest checkpoint that verifies and fits this run's plan
        try:
            resume = ckpt.load_latest(run_dir, cfg_sha, fits=lambda checkpoint: check_resumable(tr, checkpoint))
        except ckpt.CheckpointError:
            if not cfg.overwrite:
                raise
            replacing = True
    position = LoopPosition()
    if resume is not None:
        position = resume_from(tr, resume)
        log.info("resuming from %s (step %d of %d)", resume.path.name, position.step, tr.n_steps)
    # Only now, with the config, data, model and checkpoint accepted, does the run touch its folder: a
    # refused command leaves an existing run folder as it was.
    folder.start()
    if replacing and world.is_main:
        ckpt.remove_checkpoints(run_dir)
    barrier(world)
    run_dir.mkdir(parents=True, exist_ok=True)
    folder.write(base)
    warnings = precision_warnings(cfg, tr.device)
    for warning in warnings:
        log.warning(warning)
    result = base.copy()
    result.update(environment(tr.device), precision=tr.precision.label, warnings=warnings,
                  data_sha256=data_sha256(tr.data) if world.is_main else None,
                  n_params=count_parameters(tr.model), init_weights_sha256=tr.init_weights_sha256,
                  planned_steps=tr.n_steps, numerics_version=ckpt.NUMERICS_VERSION, allocator=allocator,
                  sdpa_backend=run_sdpa_backend(tr))
    who = identity(run_dir, base, in_sweep=(run_dir.parent / LOCK_FILE).exists())
    tracker = open_tracker(cfg.logger, run_dir, who, plain, position.step if resume else None) \
        if world.is_main else None
    metrics = MetricsLog(run_dir / METRICS_FILE if world.is_main else None,
                         keep_up_to_step=position.step if resume else None, mirror=tracker and tracker.log)
    try:
        return _train_and_finish(tr, folder, result, position, metrics, tracker, plain, start)
    finally:
        if tracker:
            tracker.close()  # a no-op after tracker.finish; otherwise the run stopped or crashed


def _train_and_finish(tr: Training, folder: RunFolder, result: RunResult, position: LoopPosition,
                      metrics: MetricsLog, tracker: Tracker | None, plain: dict[str, Any],
                      start: float) -> dict[str, Any]:
    """The loop, then the final outputs and result.json; a tracker gets the result once it is written."""
    world, run_dir, wall_before = tr.world, tr.run_dir, position.wall_seconds
    # Stop signals stay flags until the outputs are written: a signal during the final evaluation or
    # the weights' save must not kill the run half way through its files.
    with StopRequest() as stop:
        try:
            final = training_loop(tr, position, metrics, stop, lambda: wall_before + time.perf_counter() - start)
        except Diverged as err:
            result.update(status=Status.DIVERGED, error=str(err), diverged_at_step=err.step,
                          wall_seconds=wall_before + time.perf_counter() - start)
            folder.write(result)
            if tracker:
                tracker.finish(result.to_json())
            return result.to_json()
        except SystemExit:
            result.update(status=Status.INTERRUPTED, wall_seconds=wall_before + time.perf_counter() - start)
            folder.write(result)
            raise
        finally:
            metrics.close()
        stop.finishing()
        maybe_fire("final", final["steps"])
        wall = wall_before + time.perf_counter() - start
        result.update(final, status=Status.COMPLETED, wall_seconds=wall, error=None, diverged_at_step=None)
        result.init_param_sha256 = tr.init_param_sha256
        test = split_losses(tr.model, tr.data.test, tr.cfg.data.test_sequences, tr.micro_batch, tr.device,
                            tr.precision, world)  # every rank its share of the test set
        if world.is_main:
            finish_outputs(tr, result, plain, test, stop)
        maybe_fire("result", final["steps"])
        folder.write(result)  # after every other output: its status says they are all in place
        if tracker:
            tracker.finish(result.to_json())
        if world.is_main:
            ckpt.remove_checkpoints(run_dir)
        barrier(world)
    return result.to_json()


def run_sdpa_backend(tr: Training) -> str:
    """The attention kernel the dispatcher picks for this run's training step (see gptx.attention_backend)."""
    m = tr.cfg.model
    dtype = tr.precision.autocast_dtype or torch.float32
    return sdpa_backend(tr.device, dtype, m.n_heads, m.d_model // m.n_heads, tr.seq_len, m.dropout)


def precision_warnings(cfg: GptxConfig, device: torch.device) -> list[str]:
    """Say so when a precision choice cannot change anything on this device (a CPU computes in fp32)."""
    if device.type == "cuda":
        return []
    if "fp32" in cfg.intervention:
        return ["intervention fp32 is a no-op on a CPU: gptx computes in float32 there anyway, so this arm "
                "repeats the baseline; measure it on a GPU"]
    return []


def finish_outputs(tr: Training, result: RunResult, plain: dict[str, Any],
                   test: tuple[float, np.ndarray], stop: StopRequest | None = None) -> None:
    """Test loss (and per sequence, `test` from split_losses), throughput, sample and weights; result.json
    comes after them.

    A non-finite test loss makes the run `diverged`: its weights are kept, but no statistic may use it.
    """
    test_loss, per_sequence = test
    result.test_loss = test_loss
    if test_loss != test_loss or test_loss in (float("inf"), float("-inf")):
        result.update(status=Status.DIVERGED, error="non-finite test loss")
    result.test_tokens = len(per_sequence) * tr.seq_len
    result.tokens_per_second = result.tokens / max(result.wall_seconds, 1e-9)
    result.flops_per_token = flops_per_token(tr.model, tr.seq_len)
    result.peak_flops = training_peak_flops(tr)  # per GPU; tokens_per_second is all ranks together
    result.mfu = mfu(result.tokens_per_second / tr.world.size, result.flops_per_token, result.peak_flops)
    result.final_weights_sha256 = weights_sha256(tr.model)
    # A stop signal (a time limit, Ctrl-C) ends the sample between two tokens: the outputs after it take
    # seconds, the sample's tokens one forward pass each.
    stopped = (lambda: stop.requested) if stop is not None else None
    sample = greedy_sample(tr.model, tr.device, tr.cfg.train.sample_tokens, tokenizer_for(tr.cfg.data),
                           stop=stopped)
    if stop is not None and stop.requested:
        warning = f"{SAMPLE_FILE} was cut short by a stop signal ({signal.Signals(stop.signum).name})"
        log.warning(warning)
        result.warnings = [*result.get("warnings", []), warning]
    write_atomic(tr.run_dir / SAMPLE_FILE, (sample + "\n").encode())
    buffer = io.BytesIO()
    np.save(buffer, per_sequence.astype(np.float32), allow_pickle=False)
    write_atomic(tr.run_dir / TEST_LOSSES_FILE, buffer.getvalue())
    metadata = {"gptx_config": OmegaConf.to_yaml(plain), RECORDED_SHA_KEY: result.final_weights_sha256}
    save_weights(tr.model, tr.run_dir / MODEL_FILE, metadata)
    # The file's own bytes, so a relaunch can check it with a streaming hash (no model, no torch).
    result.weights_file_sha256 = file_sha256(tr.run_dir / MODEL_FILE)
    log.info("test_loss %.6f  (%s, %d steps, %.1f s)", result.test_loss, "+".join(result.intervention or []),
             result.steps, result.wall_seconds)

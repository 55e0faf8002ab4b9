"""Experiment trackers: mirror a run's metrics.jsonl records and final result into TensorBoard, W&B or MLflow.

    python -m gptx.train logger=tensorboard        # event files in RUN_DIR/tensorboard/
    python -m gptx.train logger=wandb              # W&B offline run in RUN_DIR/wandb/ (`wandb sync` uploads it)
    python -m gptx.train logger=mlflow logger.dir=sqlite:////shared/mlflow.db

metrics.jsonl stays the source of truth: a tracker only copies what it holds, through the tracker's own
library, and can never fail a run. The first error a tracker raises is logged as a warning and the
tracker is switched off for the rest of the run. Nothing here reaches the network unless asked to
(`logger.mode=online` for W&B, a server URI for MLflow). The logger settings are not part of
`config_sha256`: adding a tracker to a run never changes or orphans its results.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from gptx.config import LoggerConfig, LoggerKind, flatten

log = logging.getLogger("gptx.trackers")

# Result fields sent to a tracker's summary when the run ends (numbers only; the rest is in result.json).
SUMMARY_KEYS = ("test_loss", "val_loss", "train_loss", "steps", "tokens", "wall_seconds", "tokens_per_second",
                "n_params", "mfu", "grad_clip_active_steps", "grad_norm_max")
# Record fields that locate a point rather than measure something.
AXIS_KEYS = ("step",)


def scalars(record: dict[str, Any], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    """The finite numbers of a record (bools and None dropped), optionally only `keys`."""
    return {k: float(v) for k, v in record.items()
            if (keys is None or k in keys) and k not in AXIS_KEYS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    """One run's connection to a tracker; every call is guarded so a tracker error cannot fail the run."""

    def __init__(self, name: str, sink: Any):
        self.name, self._sink = name, sink

    def log(self, record: dict[str, Any]) -> None:
        """Send one metrics record (its `step` is the x axis)."""
        values = scalars(record)
        if values and "step" in record:
            self._guard("log", lambda: self._sink.log(int(record["step"]), values))

    def finish(self, result: dict[str, Any]) -> None:
        """Send the final result's numbers and its status, then close the tracker."""
        self._guard("finish", lambda: self._sink.finish(scalars(result, SUMMARY_KEYS), str(result.get("status"))))
        self._sink = None

    def close(self) -> None:
        """Close without a final result (an interrupted or failed run)."""
        self._guard("close", lambda: self._sink.close())
        self._sink = None

    def _guard(self, what: str, call) -> None:
        if self._sink is None:
            return
        try:
            call()
        except Exception as err:  # noqa: BLE001 - a tracker must never fail a run: warn once, then go quiet
            log.warning("logger %s failed in %s and is off for this run: %s: %s", self.name, what,
                        type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self._sink = None


def open_tracker(cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict[str, Any],
                 resume_step: int | None = None) -> Tracker | None:
    """A tracker for this run per `logger.*`, or None for `logger=none` or one that cannot start (a warning)."""
    if cfg.name is LoggerKind.none:
        return None
    sink = {LoggerKind.tensorboard: _TensorBoard, LoggerKind.wandb: _WandB, LoggerKind.mlflow: _MLflow}[cfg.name]
    try:
        return Tracker(cfg.name.value, sink(cfg, run_dir, run_name, config, resume_step))
    except Exception as err:  # noqa: BLE001 - a missing library or an unreachable store must not fail the run
        log.warning("logger %s could not start and is off for this run: %s: %s", cfg.name.value,
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return None


class _TensorBoard:
    """Scalars in event files under logger.dir (default RUN_DIR/tensorboard)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops points a resumed run logs again (those after its checkpoint) from the view.
        self.writer = SummaryWriter(str(Path(cfg.dir) if cfg.dir else run_dir / "tensorboard"),
                                    purge_step=resume_step)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flatten(config).items()))
        self.step = resume_step or 0

    def log(self, step: int, values: dict[str, float]) -> None:
        self.step = step
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, values: dict[str, float], status: str) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"final/{key}", value, self.step)
        self.writer.add_text("status", status, self.step)
        self.close()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """A W&B run, offline by default (files under logger.dir, default RUN_DIR/wandb)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict, resume_step: int | None):
        import wandb

        folder = Path(cfg.dir) if cfg.dir else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, dir=str(folder), mode=cfg.mode, name=run_name,
                              config=config, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off", save_code=False))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, values: dict[str, float], status: str) -> None:
        self.run.summary.update({**{f"final/{k}": v for k, v in values.items()}, "status": status})
        self.close()

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    """An MLflow run in the experiment logger.project; store logger.dir (default sqlite in RUN_DIR/mlflow.db)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, run_name: str, config: dict, resume_step: int | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        store = cfg.dir or str(run_dir / "mlflow.db")
        uri = store if "://" in store else f"sqlite:///{os.path.abspath(store)}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(cfg.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.project)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.step = resume_step or 0

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        self.step = step
        now = _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, values: dict[str, float], status: str) -> None:
        from mlflow.entities import Metric

        now = _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(f"final/{k}", v, now, self.step) for k, v in values.items()])
        self.client.set_tag(self.run_id, "gptx.status", status)
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "FAILED")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "KILLED")


def _millis() -> int:
    return int(time.time() * 1000)

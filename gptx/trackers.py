"""Experiment trackers: mirror a run's metrics.jsonl records and final result into TensorBoard, W&B or MLflow.

    python -m gptx.train logger=tensorboard        # event files in RUN_DIR/tensorboard/
    python -m gptx.train logger=wandb              # W&B offline run in RUN_DIR/wandb/ (`wandb sync` uploads it)
    python -m gptx.train logger=mlflow logger.dir=sqlite:////shared/mlflow.db
    python -m gptx.train -m logger=wandb intervention=baseline,grad_clip init_seed=1,2,3   # grouped by sweep

metrics.jsonl stays the source of truth: a tracker only copies what it holds, through the tracker's own
library, and can never fail a run. The first error a tracker raises is logged as a warning and the
tracker is switched off for the rest of the run. Nothing here reaches the network unless asked to
(`logger.mode=online` for W&B, a server URI for MLflow). The logger settings are not part of
`config_sha256`: adding a tracker to a run never changes or orphans its results.

In a sweep, runs are grouped: W&B's `group` is the sweep and its tags the arm and seeds; MLflow keeps one
store per sweep (SWEEP_DIR/mlflow.db) with the sweep as its experiment. Each run has a stable id (its
folder and config), so a requeued or resumed run continues the same tracker run instead of appearing
twice. At the end of a sweep the noise report (verdict table, figures) is logged to the same tracker.
A tracker whose library is missing is refused before anything runs (`check_available`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx.config import ConfigError, LoggerConfig, LoggerKind, flatten
from gptx.files import sweep_label
from gptx.result import Status

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


# The package each tracker needs, and how to install it.
LIBRARIES = {LoggerKind.tensorboard: "tensorboard", LoggerKind.wandb: "wandb", LoggerKind.mlflow: "mlflow"}
DEFAULT_PROJECT = "gptx"


def check_available(kind: LoggerKind | str) -> None:
    """Refuse a tracker whose library is not installed (one line with the install command), before any run:
    a whole sweep must not finish untracked behind a warning."""
    kind = LoggerKind(kind)
    library = LIBRARIES.get(kind)
    if library and importlib.util.find_spec(library) is None:
        raise ConfigError(f"logger={kind.value} needs the {library} package, which is not installed: "
                          f"pip install '{library}' (or pip install 'gptx[trackers]')")


@dataclass
class RunIdentity:
    """Where a run belongs in a tracker: its sweep (group), stable id, display name and tags."""

    name: str
    run_id: str
    sweep: str | None = None  # the sweep's name; None for a single run
    sweep_dir: Path | None = None
    tags: list[str] = field(default_factory=list)


def identity(run_dir: Path, result: dict[str, Any], in_sweep: bool) -> RunIdentity:
    """A run's tracker identity from its folder and result fields; stable across resumes and requeues."""
    run_dir = Path(run_dir)
    run_id = hashlib.sha256(f"{run_dir.resolve()}|{result.get('config_sha256')}".encode()).hexdigest()[:16]
    tags = [f"arm={result.get('arm')}"] + [f"{k}={result.get(k)}" for k in ("init_seed", "train_seed", "data_seed")
                                            if result.get(k) is not None]
    sweep_dir = run_dir.parent if in_sweep else None
    return RunIdentity(run_dir.name, run_id, sweep_label(sweep_dir) if sweep_dir else None, sweep_dir,
                       [t[:64] for t in tags])


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


def open_tracker(cfg: LoggerConfig, run_dir: Path, run_name: str | RunIdentity, config: dict[str, Any],
                 resume_step: int | None = None) -> Tracker | None:
    """A tracker for this run per `logger.*`, or None for `logger=none` or one that cannot start (a warning)."""
    if cfg.name is LoggerKind.none:
        return None
    who = run_name if isinstance(run_name, RunIdentity) else RunIdentity(run_name, _default_id(run_dir, run_name))
    sink = {LoggerKind.tensorboard: _TensorBoard, LoggerKind.wandb: _WandB, LoggerKind.mlflow: _MLflow}[cfg.name]
    try:
        return Tracker(cfg.name.value, sink(cfg, run_dir, who, config, resume_step))
    except Exception as err:  # noqa: BLE001 - a missing library or an unreachable store must not fail the run
        log.warning("logger %s could not start and is off for this run: %s: %s", cfg.name.value,
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return None


def _default_id(run_dir: Path, name: str) -> str:
    return hashlib.sha256(f"{Path(run_dir).resolve()}|{name}".encode()).hexdigest()[:16]


class _TensorBoard:
    """Scalars in event files under logger.dir (default RUN_DIR/tensorboard)."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, who: RunIdentity, config: dict, resume_step: int | None):
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
    """A W&B run, offline by default (files under logger.dir, default RUN_DIR/wandb); group = the sweep,
    tags = arm and seeds, a stable id resumed after a requeue."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, who: RunIdentity, config: dict, resume_step: int | None):
        import wandb

        folder = Path(cfg.dir) if cfg.dir else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.project, dir=str(folder), mode=cfg.mode, name=who.name, config=config,
                              id=who.run_id, resume="allow", group=who.sweep, tags=who.tags, job_type="run",
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off",
                                                                             save_code=False))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def finish(self, values: dict[str, float], status: str) -> None:
        self.run.summary.update({**{f"final/{k}": v for k, v in values.items()}, "status": status})
        self.close()

    def close(self) -> None:
        self.run.finish()


def mlflow_store(cfg: LoggerConfig, run_dir: Path, sweep_dir: Path | None) -> tuple[str, str]:
    """The MLflow tracking URI and experiment of a run: logger.dir, else one sqlite store per sweep (the sweep
    its experiment, unless logger.project names one), else one in the run's folder."""
    store = cfg.dir or str((sweep_dir or run_dir) / "mlflow.db")
    uri = store if "://" in store else f"sqlite:///{os.path.abspath(store)}"
    experiment = sweep_label(sweep_dir) if sweep_dir is not None and cfg.project == DEFAULT_PROJECT else cfg.project
    return uri, experiment


class _MLflow:
    """An MLflow run in its sweep's store and experiment (mlflow_store); a resumed run continues its MLflow run."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, who: RunIdentity, config: dict, resume_step: int | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, name = mlflow_store(cfg, run_dir, who.sweep_dir)
        self.client = MlflowClient(tracking_uri=uri)
        experiment_id = _mlflow_experiment(self.client, name)
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`gptx.run_id` = '{who.run_id}'")
        if found:  # a requeued or resumed run: the same MLflow run goes on
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.step = resume_step or 0
            return
        tags = {"gptx.run_id": who.run_id, **({"gptx.sweep": who.sweep} if who.sweep else {}),
                **{f"gptx.{t.split('=', 1)[0]}": t.split("=", 1)[1] for t in who.tags}}
        self.run_id = self.client.create_run(experiment_id, run_name=who.name, tags=tags).info.run_id
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
        self.client.set_terminated(self.run_id, "FINISHED" if status == Status.COMPLETED else "FAILED")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "KILLED")


def _millis() -> int:
    return int(time.time() * 1000)


def _mlflow_experiment(client: Any, name: str) -> str:
    """The id of the experiment `name`, created when absent (another process may create it at the same time)."""
    for _ in range(3):
        experiment = client.get_experiment_by_name(name)
        if experiment:
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # noqa: BLE001 - created by a parallel job between the two calls: look again
            time.sleep(0.2)
    raise RuntimeError(f"cannot create the MLflow experiment {name!r}")


def prepare_sweep_store(cfg: LoggerConfig, sweep_dir: Path) -> None:
    """Create a sweep's MLflow store and experiment once, before parallel jobs race to create its tables."""
    if LoggerKind(cfg.name) is LoggerKind.mlflow and not cfg.dir:
        from mlflow.tracking import MlflowClient

        uri, name = mlflow_store(cfg, sweep_dir, sweep_dir)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        _mlflow_experiment(MlflowClient(tracking_uri=uri), name)


REPORT_FILES = ("report.md", "summary.json", "noise.png", "curves.png")


def log_report(cfg: LoggerConfig, sweep_dir: Path) -> None:
    """Log a sweep's noise report to its tracker: the verdict table and figures, as one more run of the group.

    Guarded like every tracker call: a failure is a warning, never a failed sweep.
    """
    kind = LoggerKind(cfg.name)
    if kind is LoggerKind.none:
        return
    sweep_dir = Path(sweep_dir)
    try:
        summary = json.loads((sweep_dir / "summary.json").read_text())
        rows = [[arm, a.get("n"), a.get("delta"), *(a.get("ci") or [None, None]), a.get("verdict")]
                for arm, a in summary.get("arms", {}).items()]
        files = [sweep_dir / f for f in REPORT_FILES if (sweep_dir / f).is_file()]
        {LoggerKind.tensorboard: _report_tensorboard, LoggerKind.wandb: _report_wandb,
         LoggerKind.mlflow: _report_mlflow}[kind](cfg, sweep_dir, rows, files)
    except Exception as err:  # noqa: BLE001 - the report on disk is what counts; the tracker copy is extra
        log.warning("logger %s: the noise report was not logged: %s: %s", kind.value, type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "")


REPORT_COLUMNS = ["arm", "n", "delta", "ci_low", "ci_high", "verdict"]


def _report_tensorboard(cfg: LoggerConfig, sweep_dir: Path, rows: list, files: list[Path]) -> None:
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(Path(cfg.dir) if cfg.dir else sweep_dir / "tensorboard" / "noise-report"))
    table = "| " + " | ".join(REPORT_COLUMNS) + " |\n|" + "---|" * len(REPORT_COLUMNS) + "\n" + "\n".join(
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows)
    writer.add_text("verdicts", table)
    for path in files:
        if path.suffix == ".png":
            writer.add_image(path.stem, imread(path)[..., :3], dataformats="HWC")
        elif path.suffix == ".md":
            writer.add_text("report", path.read_text())
    writer.close()


def _report_wandb(cfg: LoggerConfig, sweep_dir: Path, rows: list, files: list[Path]) -> None:
    import wandb

    sweep = sweep_label(sweep_dir)
    folder = Path(cfg.dir) if cfg.dir else sweep_dir
    run = wandb.init(project=cfg.project, dir=str(folder), mode=cfg.mode, name="noise-report", group=sweep,
                     job_type="report", id=hashlib.sha256(f"{sweep_dir.resolve()}|report".encode()).hexdigest()[:16],
                     resume="allow", reinit="create_new",
                     settings=wandb.Settings(silent=True, console="off", save_code=False))
    try:
        run.log({"verdicts": wandb.Table(columns=REPORT_COLUMNS, data=rows),
                 **{p.stem: wandb.Image(str(p)) for p in files if p.suffix == ".png"}})
        run.summary.update({f"verdict/{row[0]}": row[-1] for row in rows})
    finally:
        run.finish()


def _report_mlflow(cfg: LoggerConfig, sweep_dir: Path, rows: list, files: list[Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri, name = mlflow_store(cfg, sweep_dir, sweep_dir)
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(_mlflow_experiment(client, name), run_name="noise-report",
                               tags={"gptx.sweep": sweep_label(sweep_dir), "gptx.kind": "noise-report"}).info.run_id
    for row in rows:
        client.set_tag(run_id, f"verdict.{row[0]}"[:250], str(row[-1]))
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")

"""Experiment trackers: what each sink wrote, read back with that library's own reader; errors never fail a run."""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path

import pytest

from gptx.config import LoggerConfig, LoggerKind
from gptx.trackers import RunIdentity, Tracker, open_tracker

RECORDS = [{"step": 1, "tokens": 32, "train_loss": 5.5, "lr": 0.001, "grad_norm": None},
           {"step": 2, "tokens": 64, "train_loss": 5.25, "val_loss": 5.375, "lr": 0.001, "ok": True}]
RESULT = {"status": "completed", "test_loss": 5.125, "steps": 2, "tokens": 64, "intervention": ["baseline"]}
CONFIG = {"train": {"lr": 0.001, "batch_size": 4}, "init_seed": 42}


def write_run(kind: str, run_dir: Path, **settings) -> None:
    tracker = open_tracker(LoggerConfig(name=LoggerKind(kind), **settings), run_dir, "run-a", CONFIG)
    assert tracker is not None
    for record in RECORDS:
        tracker.log(record)
    tracker.finish(RESULT)


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_run("tensorboard", tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train_loss")] == [(1, 5.5), (2, 5.25)]
    assert [(e.step, e.value) for e in events.Scalars("val_loss")] == [(2, 5.375)]
    assert [(e.step, e.value) for e in events.Scalars("final/test_loss")] == [(2, 5.125)]
    assert "grad_norm" not in events.Tags()["scalars"] and "ok" not in events.Tags()["scalars"]


def test_mlflow_metrics_and_params_read_back(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    write_run("mlflow", tmp_path, project="study")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.info.run_name == "run-a" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["init_seed"] == "42"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 5.5), (2, 5.25)]
    assert run.data.metrics["final/test_loss"] == 5.125 and run.data.tags["gptx.status"] == "completed"


def wandb_records(path: Path) -> list:
    """The records of an offline .wandb file, decoded with wandb's own protobuf schema.

    The file is W&B's 7-byte header then a LevelDB-style log: 32 KiB blocks of chunks, each with a
    7-byte header (crc, length, type 1 full / 2 first / 3 middle / 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data, records, pending, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_history_read_back(tmp_path):
    pytest.importorskip("wandb")
    write_run("wandb", tmp_path)
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60  # wandb's service process may still be flushing after finish()
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
               for r in wandb_records(path) if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], float(h["train_loss"])) for h in history] == [("1", 5.5), ("2", 5.25)]
    summary = {item.key or "/".join(item.nested_key): item.value_json for r in wandb_records(path)
               if r.WhichOneof("record_type") == "summary" for item in r.summary.update}
    assert float(summary["final/test_loss"]) == 5.125 and summary["status"] == '"completed"'


def test_no_tracker_by_default(tmp_path):
    assert open_tracker(LoggerConfig(), tmp_path, "run", CONFIG) is None
    assert list(tmp_path.iterdir()) == []


class Exploding:
    def __init__(self):
        self.calls = 0

    def log(self, step, values):
        self.calls += 1
        raise OSError("disk on fire")

    def finish(self, values, status):
        raise AssertionError("a tracker that failed once is not called again")


def test_a_failing_tracker_warns_once_and_goes_quiet(caplog):
    sink = Exploding()
    tracker = Tracker("exploding", sink)
    with caplog.at_level(logging.WARNING, logger="gptx.trackers"):
        for record in RECORDS:
            tracker.log(record)
        tracker.finish(RESULT)
    assert sink.calls == 1
    assert [r.getMessage() for r in caplog.records] == [
        "logger exploding failed in log and is off for this run: OSError: disk on fire"]


def test_a_tracker_that_cannot_start_is_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("gptx.trackers._TensorBoard.__init__", lambda *a: (_ for _ in ()).throw(ImportError("x")))
    with caplog.at_level(logging.WARNING, logger="gptx.trackers"):
        assert open_tracker(LoggerConfig(name=LoggerKind.tensorboard), tmp_path, "run", CONFIG) is None
    assert "logger tensorboard could not start and is off for this run: ImportError: x" in caplog.text


@pytest.mark.slow
def test_a_run_mirrors_metrics_jsonl_into_tensorboard_and_keeps_its_hash(tmp_path):
    pytest.importorskip("tensorboard")
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gptx.train import train

    from conftest import typed_config

    plain = train(typed_config("train.max_steps=3"), tmp_path / "plain")
    tracked = train(typed_config("train.max_steps=3", "logger=tensorboard"), tmp_path / "tracked")
    assert tracked["config_sha256"] == plain["config_sha256"]
    assert tracked["final_weights_sha256"] == plain["final_weights_sha256"]
    lines = [json.loads(line) for line in (tmp_path / "tracked" / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "tracked" / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train_loss")] == [
        (r["step"], pytest.approx(r["train_loss"], rel=1e-6)) for r in lines if "train_loss" in r]
    assert events.Scalars("final/test_loss")[0].value == pytest.approx(tracked["test_loss"], rel=1e-6)


# --- sweeps: groups, stable ids, one store, the report, missing libraries -----------------------------------


def _who(tmp_path: Path, sweep: str = "study") -> RunIdentity:
    from gptx.trackers import identity

    run_dir = tmp_path / "multirun_outputs" / sweep / "init_seed=1"
    run_dir.mkdir(parents=True, exist_ok=True)
    return identity(run_dir, {"arm": "grad_clip", "init_seed": 1, "train_seed": None, "config_sha256": "c0"},
                    in_sweep=True)


def test_a_requeued_run_continues_its_mlflow_run_in_the_sweeps_store(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    who = _who(tmp_path)
    for records in (RECORDS[:1], RECORDS[1:]):  # killed after the first record, then requeued
        tracker = open_tracker(LoggerConfig(name=LoggerKind.mlflow), who.sweep_dir / who.name, who, CONFIG)
        for record in records:
            tracker.log(record)
        tracker.close() if records is RECORDS[:1] else tracker.finish(RESULT)
    client = MlflowClient(tracking_uri=f"sqlite:///{who.sweep_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.data.tags["gptx.arm"] == "grad_clip" and run.data.tags["gptx.sweep"] == "study"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 5.5), (2, 5.25)]
    assert not (who.sweep_dir / who.name / "mlflow.db").exists()


def test_a_requeued_run_keeps_its_wandb_id_group_and_tags(tmp_path):
    pytest.importorskip("wandb")
    who = _who(tmp_path)
    for _ in range(2):  # the first attempt and its requeue
        tracker = open_tracker(LoggerConfig(name=LoggerKind.wandb), who.sweep_dir / who.name, who, CONFIG)
        tracker.log(RECORDS[0])
        tracker.close()
    folders = sorted((who.sweep_dir / who.name / "wandb").glob("offline-run-*"))
    # one W&B run: both attempts carry the run's id
    assert len(folders) == 2 and all(f"-{who.run_id}" in f.name for f in folders)
    deadline, runs = time.monotonic() + 60, []
    while not runs and time.monotonic() < deadline:
        files = list(folders[-1].glob("run-*.wandb"))
        records = wandb_records(files[0]) if files else []
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        time.sleep(0.2)
    assert runs[0].run_group == "study" and list(runs[0].tags) == ["arm=grad_clip", "init_seed=1"]


def test_a_missing_tracker_library_is_refused_with_the_install_command(monkeypatch):
    import gptx.trackers
    from gptx.config import ConfigError
    from gptx.trackers import check_available

    monkeypatch.setattr(gptx.trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"logger=wandb needs the wandb package, which is not installed: "
                                          r"pip install 'wandb'"):
        check_available("wandb")
    check_available("none")


def test_a_sweep_with_a_missing_tracker_library_stops_at_launch(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    import gptx.trackers
    from gptx.sweep import SweepCallback

    monkeypatch.setattr(gptx.trackers.importlib.util, "find_spec", lambda name: None)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "s")}}, "logger": {"name": "mlflow"}})
    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_start(config)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("gptx: error: logger=mlflow needs the mlflow package")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_sweep_logs_to_one_mlflow_store_with_its_report(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from conftest import TINY, run_gptx

    p = run_gptx("-m", "sweep=tracked", "logger=mlflow", "intervention=baseline,grad_clip", "init_seed=1,2", *TINY,
                 "train.max_steps=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "noise report: " in p.stdout and p.stdout.rstrip().endswith("report.md")
    sweep = tmp_path / "multirun_outputs" / "tracked"
    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["intervention=baseline,init_seed=1", "intervention=baseline,init_seed=2",
                     "intervention=grad_clip,init_seed=1", "intervention=grad_clip,init_seed=2", "noise-report"]
    report = next(r for r in runs if r.info.run_name == "noise-report")
    assert "verdict.grad_clip" in report.data.tags
    assert not list(sweep.glob("*/mlflow.db"))

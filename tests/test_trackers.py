"""Experiment trackers: what each sink wrote, read back with that library's own reader; errors never fail a run."""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path

import pytest

from gptx.config import LoggerConfig, LoggerKind
from gptx.trackers import Tracker, open_tracker

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

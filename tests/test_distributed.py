"""One run on two processes (gloo on CPU): completes, writes one result, and is reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def torchrun(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "gptx.train", *TINY, "train.max_steps=6", "train.checkpoint_every=2",
           f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(cmd, cwd=run_dir.parent, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def test_two_process_runs_are_bitwise_identical_and_write_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for run_dir in (a, b):
        # micro_batch_size null: each process takes its whole share (2 of the 4 sequences) at once.
        proc = torchrun(run_dir, "train.micro_batch_size=null")
        assert proc.returncode == 0, proc.stderr[-3000:]
    ra, rb = result(a), result(b)
    assert ra["status"] == "completed" and ra["world_size"] == 2
    assert ra["final_weights_sha256"] == rb["final_weights_sha256"] and ra["test_loss"] == rb["test_loss"]
    assert len([x for x in (a / "metrics.jsonl").read_text().splitlines()]) == 6  # one writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_two_process_run_resumes_bit_exactly(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert torchrun(ref).returncode == 0
    first = torchrun(cut, env={"GPTX_FAULT": "step@4=TERM"})
    assert first.returncode != 0 and result(cut)["status"] == "interrupted"
    second = torchrun(cut)
    assert second.returncode == 0, second.stderr[-3000:]
    assert result(cut)["final_weights_sha256"] == result(ref)["final_weights_sha256"]


def test_local_gpus_launcher_runs_a_multi_gpu_slot_as_one_ddp_run(tmp_path):
    # GPUs are faked (CUDA_VISIBLE_DEVICES=0,1 on a CPU machine), so the two processes use gloo.
    from conftest import run_gptx

    proc = run_gptx("-m", "sweep=ddp", "hydra/launcher=local_gpus", "hydra.launcher.gpus=[0,1]",
                    "hydra.launcher.gpus_per_job=2", *TINY, "train.max_steps=2", "init_seed=1,2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "multirun_outputs" / "ddp").rglob("result.json")]
    assert len(results) == 2
    assert all(r["status"] == "completed" and r["world_size"] == 2 for r in results)


def _evaluate_sharded(rank: int, init_file: str, out: str) -> None:
    """One of two gloo ranks: the test split's losses with the batches shared between the ranks."""
    import pickle

    import torch.distributed as dist

    from gptx.data import load_data
    from gptx.distributed import World
    from gptx.model import build_model
    from gptx.precision import Precision
    from gptx.scoring import split_losses

    from conftest import typed_config

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = typed_config("data.test_sequences=11")
    model = build_model(cfg.model, 3)
    data = load_data(cfg.data, cfg.model.context_length, cfg.model.vocab_size)
    got = split_losses(model, data.test, 11, 2, torch.device("cpu"), Precision("fp32", None, False), World(rank, 2))
    Path(out).with_suffix(f".{rank}").write_bytes(pickle.dumps(got))
    dist.destroy_process_group()


def test_evaluation_is_shared_by_the_ranks_and_bitwise_the_one_process_value(tmp_path):
    """11 test sequences in batches of 2: rank 0 takes batches 0, 2, 4, rank 1 batches 1, 3, 5; added in
    batch order, the loss and the per-sequence losses are the one-process ones to the bit."""
    import pickle

    import torch.multiprocessing as mp

    from gptx.data import load_data
    from gptx.model import build_model
    from gptx.precision import Precision
    from gptx.scoring import split_losses

    from conftest import typed_config

    mp.spawn(_evaluate_sharded, args=(str(tmp_path / "rendezvous"), str(tmp_path / "out")), nprocs=2)
    cfg = typed_config("data.test_sequences=11")
    data = load_data(cfg.data, cfg.model.context_length, cfg.model.vocab_size)
    fp32 = Precision("fp32", None, False)
    alone = split_losses(build_model(cfg.model, 3), data.test, 11, 2, torch.device("cpu"), fp32)
    for rank in (0, 1):
        loss, per_sequence = pickle.loads((tmp_path / f"out.{rank}").read_bytes())
        assert loss == alone[0] and per_sequence.tobytes() == alone[1].tobytes() and len(per_sequence) == 11


RANK_TIMEOUT = 120  # seconds a test rank waits for the others before its collectives fail


def _counting_all_reduce(counts: list[int]) -> None:
    """torch.distributed.all_reduce, counting its calls (DDP's gradient buckets do not come through it)."""
    import torch.distributed as dist

    real = dist.all_reduce

    def all_reduce(*args, **kwargs):
        counts[0] += 1
        return real(*args, **kwargs)

    dist.all_reduce = all_reduce


def _join(rank: int, size: int, init_file: str) -> None:
    """This process as rank `rank` of `size` gloo ranks, failing within RANK_TIMEOUT if the others never come."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=RANK_TIMEOUT))


# float32 values whose sum depends on its order (1e8 + 5 rounds to 1e8 + 8): the reduction must add them
# exactly as the one-element all-reduce before it did.
ORDER_SENSITIVE = (1e8, 5.0, -1e8)


def _vote(rank: int, init_file: str, out: str) -> None:
    """One of three gloo ranks: its loss and flags reduced with the others', and the old one-element mean."""
    import pickle

    import torch.distributed as dist

    from gptx.distributed import World, mean_and_any

    _join(rank, 3, init_file)
    value = torch.tensor(ORDER_SENSITIVE[rank])
    alone = value.clone()
    dist.all_reduce(alone, op=dist.ReduceOp.SUM)
    one_element_mean = float(alone / 3)
    counts = [0]
    _counting_all_reduce(counts)
    flags = [(False, True, False), (True, False, False), (False, False, False)][rank]
    got = mean_and_any(World(rank, 3), value, flags)
    Path(out).with_suffix(f".{rank}").write_bytes(pickle.dumps((got, one_element_mean, counts[0])))
    dist.destroy_process_group()


def test_mean_and_any_is_one_collective_the_same_on_every_rank_and_the_old_mean_to_the_bit(tmp_path):
    import pickle

    import torch.multiprocessing as mp

    mp.spawn(_vote, args=(str(tmp_path / "rendezvous"), str(tmp_path / "out")), nprocs=3)
    for rank in (0, 1, 2):
        (mean, flags), one_element_mean, calls = pickle.loads((tmp_path / f"out.{rank}").read_bytes())
        assert mean == one_element_mean and flags == (True, True, False) and calls == 1


def _train_rank(rank: int, init_file: str, run_dir: str, steps: int, fault: str | None, overrides: tuple[str, ...],
                out: str) -> None:
    """One of two gloo ranks of a tiny run, as torchrun would start it, counting all_reduce calls."""
    import pickle

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})
    os.environ.pop("GPTX_FAULT", None)
    if fault:
        os.environ["GPTX_FAULT"] = fault  # this rank only
    _join(rank, 2, init_file)  # gptx.distributed.init_world keeps a group that exists
    counts = [0]
    _counting_all_reduce(counts)
    from gptx.run import train

    from conftest import typed_config

    cfg = typed_config(f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.log_every={steps}",
                       "train.micro_batch_size=null", *overrides)
    try:
        train(cfg, Path(run_dir))
        code = 0
    except SystemExit as stop:
        code = stop.code
    Path(out).with_suffix(f".{rank}").write_bytes(pickle.dumps((code, counts[0])))


def _spawn_run(tmp_path: Path, name: str, steps: int, faults: tuple[str | None, str | None] = (None, None),
               overrides: tuple[str, ...] = ()) -> list[tuple[int, int]]:
    """(exit code, all_reduce calls) of each rank of the run `name` (faults: GPTX_FAULT per rank)."""
    import pickle
    import time

    import torch.multiprocessing as mp

    out, init_file = tmp_path / f"{name}.out", tmp_path / f"rendezvous-{name}-{time.monotonic_ns()}"
    ranks = [mp.get_context("spawn").Process(
        target=_train_rank, args=(rank, str(init_file), str(tmp_path / name), steps, faults[rank], overrides, str(out)))
        for rank in (0, 1)]
    try:
        for process in ranks:  # started by hand, not mp.spawn: each rank its own fault plan
            process.start()
        for process in ranks:
            process.join(timeout=2 * RANK_TIMEOUT + 60)
            assert process.exitcode == 0
    finally:
        for process in ranks:  # none outlives the test, whatever failed
            if process.is_alive():
                process.kill()
                process.join()
    return [pickle.loads(out.with_suffix(f".{rank}").read_bytes()) for rank in (0, 1)]


def test_a_distributed_step_makes_one_collective_of_its_own(tmp_path):
    """Two more steps make two more all_reduce calls on each rank: the step's loss carries the stop and
    checkpoint-clock flags (one host sync a step on GPUs, not two)."""
    four, six = _spawn_run(tmp_path, "four", 4), _spawn_run(tmp_path, "six", 6)
    assert [code for code, _ in four + six] == [0, 0, 0, 0]
    assert [b - a for (_, a), (_, b) in zip(four, six)] == [2, 2]


def test_ranks_agree_on_one_ranks_stop_and_rank_zeros_clock_and_resume_bit_exactly(tmp_path):
    from gptx import checkpoint as ckpt

    ref = _spawn_run(tmp_path, "ref", 6)
    assert [code for code, _ in ref] == [0, 0]
    # Rank 0's clock is due at every step: both ranks checkpoint at each one and end with the same bits.
    clocked = _spawn_run(tmp_path, "clocked", 6, overrides=("train.checkpoint_minutes=1e-9",))
    assert [code for code, _ in clocked] == [0, 0]
    assert result(tmp_path / "clocked")["final_weights_sha256"] == result(tmp_path / "ref")["final_weights_sha256"]
    cut = _spawn_run(tmp_path, "cut", 6, faults=(None, "step@3=TERM"))
    assert [code for code, _ in cut] == [143, 143]  # 128 + SIGTERM on both ranks
    stopped = result(tmp_path / "cut")
    assert stopped["status"] == "interrupted"
    # Rank 1's flag went with step 3's loss; both ranks acted on it at the top of step 4.
    assert ckpt.load_latest(tmp_path / "cut", stopped["config_sha256"]).state.step == 3
    assert [code for code, _ in _spawn_run(tmp_path, "cut", 6)] == [0, 0]
    assert result(tmp_path / "cut")["final_weights_sha256"] == result(tmp_path / "ref")["final_weights_sha256"]

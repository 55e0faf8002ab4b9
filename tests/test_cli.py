"""The commands users type, end to end, in a subprocess."""

from __future__ import annotations

import json

import pytest

from conftest import TINY, run_gptx

pytestmark = pytest.mark.slow


def test_the_used_by_sweep_leaves_six_result_folders(tmp_path):
    proc = run_gptx("-m", "intervention=grad_clip,qkv_bias", "init_seed=22,42,67", "sweep=used_by",
                    *TINY, "train.max_steps=2", "hydra/launcher=basic", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun_outputs" / "used_by"
    results = sorted(sweep.rglob("result.json"))
    assert len(results) == 6
    seen = set()
    for path in results:
        r = json.loads(path.read_text())
        assert r["status"] == "completed" and r["steps"] == 2
        seen.add((r["intervention"][0], r["init_seed"]))
        assert f"init_seed={r['init_seed']}" in str(path.parent) and r["intervention"][0] in str(path.parent)
        assert (path.parent / ".hydra" / "config.yaml").is_file()
        assert (path.parent / "model.safetensors").is_file()
    assert seen == {(i, s) for i in ("grad_clip", "qkv_bias") for s in (22, 42, 67)}
    # Same init seed: same initial weights across grad_clip runs; qkv_bias adds tensors, so differs.
    by = {(json.loads(p.read_text())["intervention"][0], json.loads(p.read_text())["init_seed"]):
          json.loads(p.read_text()) for p in results}
    assert by[("grad_clip", 42)]["init_weights_sha256"] != by[("qkv_bias", 42)]["init_weights_sha256"]


def test_unknown_intervention_gets_hydras_list_of_choices(tmp_path):
    proc = run_gptx("intervention=grad_clipp", *TINY, cwd=tmp_path)
    assert proc.returncode != 0
    assert "grad_clip" in proc.stderr and "qkv_bias" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("override", "message"), [
    ("train.lr=-1", "gptx: error: train.lr=-1.0 must be > 0"),
    ("train.batch_size=0", "gptx: error: train.batch_size=0 must be > 0"),
    ("train.seq_len=4096", "gptx: error: train.seq_len=4096 is longer than the model's context"),
])
def test_nonsense_values_get_one_line_before_training(tmp_path, override, message):
    proc = run_gptx(*TINY, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "result.json").exists()


def test_empty_token_directory_is_refused(tmp_path):
    (tmp_path / "tokens").mkdir()
    proc = run_gptx("data=tokens", f"data.path={tmp_path / 'tokens'}", *TINY,
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2 and "no *train*.bin token files" in proc.stderr


def test_divergence_exits_non_zero_with_the_step(tmp_path):
    proc = run_gptx(*TINY, f"hydra.run.dir={tmp_path}", cwd=tmp_path, env={"GPTX_FAULT": "nan@2"})
    assert proc.returncode == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["status"], result["diverged_at_step"]) == ("diverged", 2)


def test_saved_config_reruns_bit_identically(tmp_path):
    first = tmp_path / "first"
    assert run_gptx(*TINY, "init_seed=7", f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    again = tmp_path / "again"
    proc = run_gptx("--config-path", str(first / ".hydra"), "--config-name", "config",
                    f"hydra.run.dir={again}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, again))
    assert a["final_weights_sha256"] == b["final_weights_sha256"] and a["config_sha256"] == b["config_sha256"]


def test_one_bad_job_in_a_sweep_does_not_stop_the_others(tmp_path):
    proc = run_gptx("-m", "sweep=mixed", *TINY, "train.max_steps=1", "train.seq_len=64,16", cwd=tmp_path)
    assert proc.returncode != 0
    sweep = tmp_path / "multirun_outputs" / "mixed"
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.rglob("result.json")}
    assert sorted(statuses.values()) == ["completed", "failed"]
    assert "longer than the model's context" in proc.stderr
    assert "failed" in (sweep / "runs.csv").read_text()
